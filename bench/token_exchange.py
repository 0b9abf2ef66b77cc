"""Benchmark: token exchange in process vs its floor, and over HTTP on loopback.

    python bench/token_exchange.py [--n 3000] [--concurrency 16]

Floor: a bare loop of PyJWT decode (RS256, as GitHub signs) + PyJWT Ed25519 sign with the same keys,
which is the least any exchange must do. Ours: TokenExchange.exchange (form checks, header rules,
kid lookup, alg/key agreement, verification, connection conditions, role matching, access token).
HTTP: the broker's aiohttp app served by a separate process, driven by an aiohttp client.
Also: the cost of a maximum-size (64 KiB) subject token, a GitHub-shaped token padded with a `groups`
list as a GitLab user in hundreds of groups has, beside the floor for the same token; and of refusing
one byte more (the size is checked before anything is decoded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import aiohttp  # noqa: E402
import aiohttp.web  # noqa: E402
import jwt  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat  # noqa: E402

from kubepam.adapters.kube import SecretData  # noqa: E402
from kubepam.adapters.signing import SigningKeys  # noqa: E402
from kubepam.domain.oauth import GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_JWT, OAuthError  # noqa: E402
from kubepam.domain.token_rules import MAX_TOKEN_BYTES  # noqa: E402
from kubepam.services.workload_identity import TokenExchange  # noqa: E402
from tests.handlers.fakes import FakeDirectory, FakeFetcher, jwks_cache  # noqa: E402
from tests.tokens import AUDIENCE, ISSUERS, Issuer  # noqa: E402


class MemorySecrets:
    def __init__(self) -> None:
        self.items: dict[str, SecretData] = {}

    async def get(self, namespace: str, name: str) -> SecretData | None:
        return self.items.get(name)

    async def create(
        self, namespace: str, name: str, data: Mapping[str, bytes], labels: Any = None
    ) -> SecretData:
        self.items[name] = SecretData(dict(data), "1")
        return self.items[name]

    async def replace(
        self, namespace: str, name: str, data: Mapping[str, bytes], rv: str, labels: Any = None
    ) -> SecretData:
        return await self.create(namespace, name, data)


def clock() -> datetime:
    return datetime.now(UTC)


async def build(issuer: Issuer) -> tuple[TokenExchange, SigningKeys]:
    directory = FakeDirectory()
    directory.add_connection(
        "team-a",
        "gh",
        {
            "provider": "github",
            "audiences": [AUDIENCE],
            "jwksUrl": "https://jwks.test/",
            "claims": [
                {"claim": "repository", "operator": "equals", "value": "acme/payments"},
                {"claim": "ref", "operator": "glob", "value": "refs/heads/*"},
            ],
        },
    )
    for i in range(20):  # a realistic namespace: several roles, one matches
        directory.add_role(
            "team-a",
            f"role-{i}",
            {
                "match": [
                    {"conditions": [{"claim": "environment", "operator": "equals", "value": f"env-{i}"}]}
                ]
            },
        )
    directory.add_role(
        "team-a",
        "deployer",
        {
            "match": [
                {
                    "conditions": [
                        {"claim": "environment", "operator": "in", "values": ["production"]},
                        {"claim": "job_workflow_ref", "operator": "startsWith", "value": "acme/payments/"},
                    ]
                }
            ]
        },
    )
    signing = SigningKeys(
        MemorySecrets(),
        "kubepam-system",
        "keys",
        rotation_period=timedelta(days=7),
        max_token_ttl=timedelta(hours=12),
    )
    await signing.sync(clock())
    cache = jwks_cache(FakeFetcher(issuer.jwks()), clock)
    exchange = TokenExchange(
        directory,
        cache,
        signing,
        issuer="https://kubepam.test",
        audience="kubepam",
        clock=clock,
        record=lambda endpoint, outcome: None,
    )
    return exchange, signing


def form(token: str) -> dict[str, str]:
    return {
        "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
        "subject_token": token,
        "subject_token_type": TOKEN_TYPE_JWT,
        "connection": "team-a/gh",
    }


def floor(tokens: list[str], issuer: Issuer, signing: SigningKeys) -> float:
    public = issuer.key.public_key()
    private, kid = signing.active.private, signing.active.record.kid
    start = time.perf_counter()
    for token in tokens:
        claims = jwt.decode(
            token, public, algorithms=["RS256"], audience=AUDIENCE, issuer=issuer.issuer, leeway=60
        )
        jwt.encode(
            {"sub": claims["sub"], "exp": claims["exp"], "roles": ["team-a/deployer"]},
            private,
            algorithm="EdDSA",
            headers={"kid": kid},
        )
    return len(tokens) / (time.perf_counter() - start)


async def ours(exchange: TokenExchange, tokens: list[str]) -> float:
    start = time.perf_counter()
    for token in tokens:
        await exchange.exchange(form(token))
    return len(tokens) / (time.perf_counter() - start)


async def serve(port: int, kid: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from kubepam.handlers.broker import make_app

    key = load_pem_private_key(sys.stdin.buffer.read(), password=None)
    exchange, signing = await build(Issuer(ISSUERS["github"], alg="RS256", kid=kid, key=key))
    app = make_app(SimpleNamespace(exchange=exchange, signing=signing, directory=None))  # type: ignore[arg-type]
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def http_load(url: str, tokens: list[str], concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = list(tokens)

    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                token = queue.pop()
                start = time.perf_counter()
                async with session.post(url, data=form(token)) as resp:
                    await resp.read()
                    assert resp.status == 200, await resp.text()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(tokens) / elapsed, latencies


def max_size_token(issuer: Issuer) -> str:
    """A GitHub-shaped token with a `groups` list, as long as the limit allows (within 100 bytes)."""
    group = "acme-corporation/engineering/platform-team-000/service-000"
    count = (MAX_TOKEN_BYTES - len(issuer.mint("github"))) * 3 // 4 // (len(group) + 3)
    while True:
        token = issuer.mint("github", groups=[group.replace("000", f"{i:03d}") for i in range(count)])
        if len(token) <= MAX_TOKEN_BYTES:
            return token
        count -= 1


async def large_tokens(exchange: TokenExchange, issuer: Issuer, signing: SigningKeys, n: int) -> None:
    big = [max_size_token(issuer) for _ in range(n)]
    typical = [issuer.mint("github") for _ in range(n)]
    await ours(exchange, big[:20])
    big_floor, big_ours, small_ours = (
        floor(big, issuer, signing),
        await ours(exchange, big),
        await ours(exchange, typical),
    )
    over = "e" * (MAX_TOKEN_BYTES + 1)
    start = time.perf_counter()
    for _ in range(n):
        try:
            await exchange.exchange(form(over))
        except OAuthError as err:
            assert err.outcome == "oversize"
    refused = (time.perf_counter() - start) / n
    print(f"maximum-size subject token ({len(big[0])} bytes, {n} tokens; typical: {len(typical[0])} bytes)")
    print(f"  floor (PyJWT decode + Ed25519 sign): {big_floor:8.0f} /s   {1e3 / big_floor:6.2f} ms each")
    print(f"  kubepam TokenExchange.exchange     : {big_ours:8.0f} /s   {1e3 / big_ours:6.2f} ms each")
    print(f"  ratio ours/floor                   : {big_ours / big_floor:8.2f}")
    print(f"  a typical token, same run          : {small_ours:8.0f} /s   {1e3 / small_ours:6.2f} ms each")
    print(f"  refusing {MAX_TOKEN_BYTES + 1} bytes (oversize)   : {refused * 1e6:8.1f} us each")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kid", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve, args.kid)
        return
    issuer = Issuer(ISSUERS["github"], alg="RS256")
    exchange, signing = await build(issuer)
    tokens = [issuer.mint("github") for _ in range(args.n)]
    await ours(exchange, tokens[:200])  # warm caches (key parse, compiled patterns)
    floor(tokens[:200], issuer, signing)
    floors, ourses = [], []
    for _ in range(3):  # interleave to share machine noise
        floors.append(floor(tokens, issuer, signing))
        ourses.append(await ours(exchange, tokens))
    f, o = statistics.median(floors), statistics.median(ourses)
    print(
        f"token exchange in process ({args.n} tokens x 3 rounds, RS256 subject token, Ed25519 access token)"
    )
    print(f"  floor (PyJWT decode + Ed25519 sign): {f:8.0f} /s")
    print(f"  kubepam TokenExchange.exchange     : {o:8.0f} /s")
    print(f"  ratio ours/floor                   : {o / f:8.2f}   (aim >= 0.5)")
    await large_tokens(exchange, issuer, signing, max(100, args.n // 10))

    port = int(os.environ.get("BENCH_PORT", "0")) or 18000 + os.getpid() % 1000
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        str(port),
        "--kid",
        issuer.kid,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(issuer.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        server.stdin.close()
        assert (await server.stdout.readline()).strip() == b"ready"
        url = f"http://127.0.0.1:{port}/v1/token"
        await http_load(url, tokens[:300], args.concurrency)  # warm up
        rate, lat = await http_load(url, tokens, args.concurrency)
        print(
            f"HTTP POST /v1/token on loopback ({args.n} requests, {args.concurrency} concurrent, "
            "server in its own process)"
        )
        print(
            f"  {rate:8.0f} req/s   p50 {pct(lat, 0.5) * 1000:6.2f} ms   p99 {pct(lat, 0.99) * 1000:6.2f} ms"
        )
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
