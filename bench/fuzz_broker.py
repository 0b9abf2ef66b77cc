"""Fuzz the broker in process: hostile inputs through every endpoint over loopback HTTP.

    python bench/fuzz_broker.py [--n 100000] [--seed 11] [--concurrency 32]

The whole broker (tests/handlers/broker_world.py: a GitHub-shaped connection, kubepam access tokens,
a project's CA for workload SSH certificates, enrollment) is served by aiohttp's test server and fed:
random bytes and text as subject tokens, mutations of valid tokens, random claim sets and random JOSE
header members signed with the connection's own trusted key, payloads with invalid UTF-8, surrogate
escapes, NaN and deep nesting, random forms (repeated keys, >1000 fields, broken percent-encoding), and
random JSON (deep, wide, wrongly typed, almost valid) to /v1/ssh/sign and /v1/checkouts (with and
without a valid access token) and /v1/enroll (with and without a valid enrollment token).

It prints the inputs tried, the outcomes by status code, server errors (must be 0), ERROR log lines
(must be 0) and wrong verdicts (a token issued although a check failed, or refused although every
check passed, by the same oracle as tests/handlers/test_broker_properties.py; must be 0). Exit 1 if
any of the three is not 0. Not part of the test suite: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import logging
import random
import string
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from kubepam.domain.oauth import GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_JWT  # noqa: E402
from tests.handlers.broker_world import BrokerWorld  # noqa: E402
from tests.handlers.test_broker_properties import should_issue  # noqa: E402
from tests.tokens import AUDIENCE, ISSUERS, sign_raw  # noqa: E402

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
ISSUER = ISSUERS["github"]


class Case:
    """One input: where it goes, what is sent, and (for signed tokens) whether it must be issued."""

    __slots__ = ("body", "expect_issue", "headers", "kind", "path")

    def __init__(
        self, kind: str, path: str, body: bytes, headers: dict[str, str], expect_issue: bool | None = None
    ) -> None:
        self.kind, self.path, self.body, self.headers = kind, path, body, headers
        self.expect_issue = expect_issue


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Fuzzer:
    def __init__(self, bw: BrokerWorld, rng: random.Random) -> None:
        self.bw = bw
        self.rng = rng
        self.issuer = bw.world.issuer
        self.valid_tokens = [self.issuer.mint("github") for _ in range(50)]

    # ----- building blocks ---------------------------------------------------------------------
    def text(self, n: int = 20) -> str:
        r = self.rng
        alphabet = r.choice(
            [
                string.ascii_letters + string.digits,
                string.printable,
                "".join(chr(c) for c in range(0x20, 0x250)),
                "\u00b2\u0663\uff11\u202e\u200b\ufeff\U0001f600/~.%&=+",
            ]
        )
        return "".join(r.choice(alphabet) for _ in range(r.randint(0, n)))

    def scalar(self) -> Any:
        r = self.rng
        return r.choice(
            [
                None,
                True,
                False,
                r.randint(-(2**64), 2**64),
                r.random() * 10 ** r.randint(-5, 300),
                self.text(),
                "",
                "1700000000",
                10**30,
            ]
        )

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        roll = r.random()
        if depth > 4 or roll < 0.5:
            return self.scalar()
        if roll < 0.75:
            return [self.value(depth + 1) for _ in range(r.randint(0, 5))]
        return {self.text(8): self.value(depth + 1) for _ in range(r.randint(0, 5))}

    def form_body(self, fields: dict[str, str] | list[tuple[str, str]]) -> bytes:
        return urllib.parse.urlencode(fields).encode()

    def exchange_form(self, token: str) -> dict[str, str]:
        return {
            "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
            "subject_token": token,
            "subject_token_type": TOKEN_TYPE_JWT,
            "connection": "team-a/ci",
        }

    def token_case(self, kind: str, token: str, expect: bool | None = None) -> Case:
        path = self.rng.choice(["/v1/token", "/v1/token", "/v1/token/validate"])
        return Case(
            kind,
            path,
            self.form_body(self.exchange_form(token)),
            FORM,
            expect if path == "/v1/token" else None,
        )

    # ----- generators ---------------------------------------------------------------------------
    def random_token(self) -> Case:
        r = self.rng
        choice = r.randrange(4)
        if choice == 0:
            token = bytes(r.getrandbits(8) for _ in range(r.randint(1, 400))).decode("latin-1")
        elif choice == 1:
            token = ".".join(b64(bytes(r.getrandbits(8) for _ in range(r.randint(0, 300)))) for _ in range(3))
        elif choice == 2:
            token = self.text(300) or "x"
        else:
            token = ".".join(b64(json.dumps(self.value()).encode()) for _ in range(r.choice([2, 3, 3, 4])))
        return self.token_case("random-token", token)

    def mutated_token(self) -> Case:
        r = self.rng
        token = list(r.choice(self.valid_tokens))
        for _ in range(r.randint(1, 5)):
            if len(token) < 2:
                break
            op = r.randrange(5)
            i = r.randrange(len(token))
            if op == 0:
                token[i] = r.choice(string.ascii_letters + string.digits + "-_.=+/!\u00e9")
            elif op == 1:
                del token[i]
            elif op == 2:
                token.insert(i, r.choice(".-_A"))
            elif op == 3:
                token = token[: r.randrange(1, len(token))]
            else:
                parts = "".join(token).split(".")
                r.shuffle(parts)
                token = list(".".join(parts))
        return self.token_case("mutated-token", "".join(token) or "x")

    def claims(self) -> tuple[dict[str, Any], bool]:
        r = self.rng
        now = int(time.time())
        offsets = [-86_400, -3600, -90, -30, 30, 90, 3600, 86_400]

        def when() -> Any:
            d = r.choice(offsets)
            return r.choice([now + d, now + d, float(now + d) + 0.25, str(now + d), True, None, [now], 1e300])

        valid: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "repo:acme/payments:ref:refs/heads/main",
            "jti": "j",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "repository": "acme/payments",
            "ref": "refs/heads/main",
        }
        changes: dict[str, Any] = {
            "iss": lambda: r.choice([ISSUER + "/", "https://evil.example", [ISSUER], 1, self.value()]),
            "aud": lambda: r.choice([[AUDIENCE], ["x", AUDIENCE], [], ["x"], [AUDIENCE, 1], 5, self.value()]),
            "sub": lambda: r.choice([1224344, None, ["s"], self.value()]),
            "jti": lambda: r.choice([7, None, self.value()]),
            "iat": when,
            "nbf": when,
            "exp": when,
            "repository": lambda: r.choice([["acme/payments"], "evil/fork", 1, True, None, self.value()]),
            "ref": lambda: r.choice([["x", "refs/heads/main"], "refs/heads/dev", 0, self.value()]),
        }
        out: dict[str, Any] = {}
        for name, good in valid.items():
            roll = r.random()
            if roll < 0.7:
                out[name] = good
            elif roll < 0.85:
                out[name] = changes[name]()
        for _ in range(r.randint(0, 4)):
            out[self.text(10)] = self.value()
        return out, should_issue(out, time.time())

    def signed_claims(self) -> Case:
        claims, expect = self.claims()
        header = {"alg": "RS256", "typ": "JWT", "kid": self.issuer.kid}
        token = sign_raw(self.issuer, json.dumps(header).encode(), json.dumps(claims).encode())
        return self.token_case("signed-claims", token, expect)

    def signed_header(self) -> Case:
        r = self.rng
        header: dict[str, Any] = {}
        header["alg"] = r.choice(["RS256", "RS256", "RS256", "PS256", "ES256", "HS256", "none", "", "EdDSA"])
        if r.random() < 0.2:
            header["alg"] = self.value()
        kid = r.choice(["ours", "ours", "absent", "null", "other"])
        if kid == "ours":
            header["kid"] = self.issuer.kid
        elif kid == "null":
            header["kid"] = None
        elif kid == "other":
            header["kid"] = r.choice([self.value(), "k" * r.randint(1, 20_000)])
        for member in r.sample(["typ", "crit", "b64", "jku", "x5u", "cty", "zip", "x"], r.randint(0, 3)):
            header[member] = r.choice([self.value(), False, ["b64"], ["exp"]])
        token = sign_raw(
            self.issuer, json.dumps(header).encode(), json.dumps(self.issuer.claims("github")).encode()
        )
        expect = (
            header.get("alg") == "RS256"
            and header.get("kid", self.issuer.kid) == self.issuer.kid
            and "crit" not in header
            and header.get("b64", True) is not False
        )
        return self.token_case("signed-header", token, expect)

    def signed_payload_bytes(self) -> Case:
        r = self.rng
        text = json.dumps(self.issuer.claims("github"))
        trick = r.choice(
            [
                b"\xed\xa0\x80",
                b"\\ud800",
                b"\\udfff\\ud800",
                b"\xff",
                b"\xc0\xaf",
                b"\xf4\x90\x80\x80",
                b"\\u0000",
                b'", "x": NaN, "y": "',
                b'", "x": 1e999, "y": "',
                b'", "x": ' + b"[" * r.randint(10, 20_000) + b'"',
                b'", "sub": 12, "y": "',
            ]
        )
        raw = text.replace('"refs/heads/main"', '"refs/heads/main' + "\x00MARK" + '"').encode()
        raw = raw.replace(b"\x00MARK", trick)
        header = json.dumps({"alg": "RS256", "kid": self.issuer.kid}).encode()
        return self.token_case("payload-bytes", sign_raw(self.issuer, header, raw))

    def random_form(self) -> Case:
        r = self.rng
        token = r.choice(self.valid_tokens)
        roll = r.randrange(5)
        if roll == 0:
            fields: Any = {self.text(12): self.text(40) for _ in range(r.randint(0, 8))}
            body = self.form_body(fields)
        elif roll == 1:
            fields = list(self.exchange_form(token).items())
            fields.append(r.choice(fields))
            body = self.form_body(fields)
        elif roll == 2:
            body = "&".join(f"f{i}=v" for i in range(r.choice([999, 1000, 1001, 2000]))).encode()
        elif roll == 3:
            body = self.form_body({**self.exchange_form(token), self.text(5): self.text(5)}).replace(
                b"urn", r.choice([b"%ED%A0%80", b"%FF", b"%", b"%zz", b"\xff"]), 1
            )
        else:
            body = bytes(r.getrandbits(8) for _ in range(r.randint(0, 500)))
        path = r.choice(["/v1/token", "/v1/token/validate"])
        headers = FORM if r.random() < 0.9 else r.choice([JSON, {"Content-Type": "multipart/form-data"}, {}])
        return Case("random-form", path, body, headers)

    def json_body(self) -> bytes:
        r = self.rng
        bw = self.bw
        roll = r.randrange(6)
        if roll == 0:
            return json.dumps(self.value()).encode()
        if roll == 1:
            depth = r.randint(20, 60_000)
            opener, closer, inner = r.choice([("[", "]", ""), ('{"a":', "}", "1"), ('[{"b":', "}]", "2")])
            return (opener * depth + inner + closer * depth * r.randint(0, 1)).encode()[: 72 * 1024 + 10]
        if roll == 2:
            n = r.randint(100, 5000)
            return json.dumps({f"k{i}": i for i in range(n)} if r.random() < 0.5 else list(range(n))).encode()
        if roll == 3:
            base = r.choice([bw.ssh_body(), bw.enroll_body(), bw.checkout_body()])
            key = r.choice(sorted(base))
            return json.dumps({**base, key: self.value()}).encode()
        if roll == 4:
            base = r.choice([bw.ssh_body(), bw.enroll_body(), bw.checkout_body()])
            return json.dumps({k: v for k, v in base.items() if r.random() < 0.7}).encode()
        return r.choice([b'{"a": NaN}', b'{"a": "\\ud800"}', b"\xed\xa0\x80", b"{", b"", b"null", b"[]"])

    def random_json(self) -> Case:
        r = self.rng
        path = r.choice(
            ["/v1/ssh/sign", "/v1/ssh/sign", "/v1/enroll", "/v1/enroll", "/v1/token", "/v1/checkouts"]
        )
        headers = dict(JSON) if r.random() < 0.9 else dict(FORM)
        if path in ("/v1/ssh/sign", "/v1/checkouts"):
            printable = "".join(c for c in self.text(50) if " " <= c <= "~")  # what a header can carry
            bearer = r.choice(
                [self.bw.access_token, self.bw.access_token, r.choice(self.valid_tokens), printable, ""]
            )
            headers["Authorization"] = r.choice(["Bearer ", "bearer ", "Basic ", ""]) + bearer
        return Case("random-json", path, self.json_body(), headers)

    def next(self) -> Case:
        generator = self.rng.choices(
            [
                self.random_token,
                self.mutated_token,
                self.signed_claims,
                self.signed_header,
                self.signed_payload_bytes,
                self.random_form,
                self.random_json,
            ],
            weights=[12, 12, 20, 12, 8, 12, 24],
        )[0]
        return generator()


class ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    errors = ErrorCounter()
    logging.getLogger().addHandler(errors)
    logging.getLogger().setLevel(logging.WARNING)
    bw = await BrokerWorld().start()
    fuzzer = Fuzzer(bw, random.Random(args.seed))
    by_status: collections.Counter[int] = collections.Counter()
    by_kind: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    server_errors: list[str] = []
    wrong: list[str] = []
    done = 0
    started = time.perf_counter()
    async with TestClient(TestServer(bw.app(), host="127.0.0.1")) as client:

        async def worker(count: int) -> None:
            nonlocal done
            for _ in range(count):
                case = fuzzer.next()
                async with client.post(case.path, data=case.body, headers=case.headers) as resp:
                    await resp.read()
                    status = resp.status
                by_status[status] += 1
                by_kind[case.kind][status] += 1
                if status >= 500:
                    server_errors.append(f"{case.kind} {case.path} {status} {case.body[:120]!r}")
                if case.expect_issue is not None and (status == 200) != case.expect_issue:
                    expected = "issued" if case.expect_issue else "refused"
                    wrong.append(f"{case.kind}: {status}, expected {expected}: {case.body[:200]!r}")
                done += 1
                if done % 20_000 == 0:
                    rate = done / (time.perf_counter() - started)
                    print(f"  ... {done} inputs ({rate:.0f}/s)", flush=True)

        share, extra = divmod(args.n, args.concurrency)
        await asyncio.gather(*(worker(share + (1 if i < extra else 0)) for i in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    print(f"broker fuzz: {done} inputs tried in {elapsed:.0f} s ({done / elapsed:.0f}/s), seed {args.seed}")
    print("  outcomes by status: " + ", ".join(f"{code}: {n}" for code, n in sorted(by_status.items())))
    for kind, counts in sorted(by_kind.items()):
        print(f"    {kind:15} " + ", ".join(f"{code}: {n}" for code, n in sorted(counts.items())))
    print(f"  server errors (5xx): {len(server_errors)}")
    print(f"  ERROR log lines: {len(errors.lines)}")
    print(f"  wrong verdicts (issued although a check failed, or refused although all passed): {len(wrong)}")
    for line in (server_errors + errors.lines + wrong)[:10]:
        print("   ", line)
    return 1 if server_errors or errors.lines or wrong else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
