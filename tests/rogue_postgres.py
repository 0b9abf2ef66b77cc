"""A rogue "PostgreSQL" on 127.0.0.1 that records what a client sends it: whether anything connected,
whether TLS was asked for and completed, and any password message. It speaks just enough of the
protocol (SSLRequest, startup, an authentication request for a cleartext or MD5 password) to catch a
client that would hand a password over. Runs in a thread, bounded in time, as a context manager."""

from __future__ import annotations

import socket
import ssl
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.tls import Pair

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5


@dataclass
class Seen:
    connections: int = 0
    bytes_received: int = 0
    ssl_requests: int = 0
    handshakes: int = 0  # completed TLS handshakes
    handshake_errors: list[str] = field(default_factory=list)
    startups: int = 0  # startup messages (they name the user)
    passwords: list[bytes] = field(default_factory=list)  # PasswordMessage bodies


class RoguePostgres:
    """``tls``: present this certificate when TLS is asked for (None: refuse TLS with 'N', as a plain
    server would). ``auth``: the password kind to ask for after the startup message."""

    def __init__(self, tls: Pair | None = None, auth: int = AUTH_CLEARTEXT, timeout: float = 5.0) -> None:
        self.seen = Seen()
        self._auth = auth
        self._timeout = timeout
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._context: ssl.SSLContext | None = None
        if tls is not None:
            folder = Path(tempfile.mkdtemp(prefix="kubepam-rogue-"))
            (folder / "cert.pem").write_bytes(tls.cert_pem)
            (folder / "key.pem").write_bytes(tls.key_pem)
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(folder / "cert.pem", folder / "key.pem")

    def __enter__(self) -> RoguePostgres:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.seen.connections += 1
            conn.settimeout(self._timeout)
            try:
                self._session(conn)
            except (OSError, ValueError, struct.error):
                pass
            finally:
                conn.close()

    def _read(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        self.seen.bytes_received += len(data)
        return data

    def _session(self, conn: socket.socket) -> None:
        sock: socket.socket = conn
        while True:
            head = self._read(sock, 8)
            if len(head) < 8:
                return
            length, code = struct.unpack("!ii", head)
            if length == 8 and code == GSSENC_REQUEST:
                sock.sendall(b"N")
                continue
            if length == 8 and code == SSL_REQUEST:
                self.seen.ssl_requests += 1
                if self._context is None:
                    sock.sendall(b"N")
                    continue
                sock.sendall(b"S")
                try:
                    sock = self._context.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    self.seen.handshake_errors.append(str(exc))
                    return
                self.seen.handshakes += 1
                continue
            break
        self._read(sock, length - 8)  # the rest of the startup message
        self.seen.startups += 1
        if self._auth == AUTH_MD5:
            sock.sendall(b"R" + struct.pack("!ii", 12, AUTH_MD5) + b"salt")
        else:
            sock.sendall(b"R" + struct.pack("!ii", 8, AUTH_CLEARTEXT))
        kind = self._read(sock, 1)
        if kind != b"p":
            return
        (size,) = struct.unpack("!i", self._read(sock, 4))
        self.seen.passwords.append(self._read(sock, size - 4))
