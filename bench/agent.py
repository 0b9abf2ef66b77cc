"""Benchmark: the broker's side of the server agent beside its floor, in one run.

    python bench/agent.py [--n 3000] [--policies 200]

- Signed request: AgentService.authenticate (parse the x5c certificate, check it chains to the project's
  CA and is the Server's enrolled key, verify the EdDSA JWT, check htm/htu/iat/exp, claim the jti)
  beside the floor, a bare PyJWT EdDSA decode of the same token with the key already in hand.
- Desired state: AgentService.document (every AccessPolicy rule of the namespace against the server's
  labels, the SHA-256 ETag of the canonical JSON) with --policies policies in the namespace, beside the
  floor, json.dumps + sha256 of an answer of the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import jwt  # noqa: E402
from cryptography import x509  # noqa: E402

from kubepam.domain.policy import parse_policy  # noqa: E402
from tests.handlers.test_agent_api import NS, PROJECT, Agent, World  # noqa: E402


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s ({seconds / n * 1e6:,.1f} us each)"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--policies", type=int, default=200)
    args = parser.parse_args()

    world = await World().start()
    agent = Agent("web-1")
    answer = await world.enroller.enroll(world.enroll_body(agent))
    agent.certificate = answer["agent"]["certificate"]
    world.directory.policy_list += [
        parse_policy(
            NS,
            f"team-{i}",
            {
                "principals": {"users": [f"user{i}"]},
                "rules": [
                    {
                        "name": "login",
                        "projects": [PROJECT],
                        "servers": {"matchLabels": {"role": "web" if i % 2 else "db"}},
                    }
                ],
            },
        )
        for i in range(args.policies)
    ]
    target = "/v1/servers/self/access?wait=30"
    tokens = [agent.token("GET", target, world.clock()) for _ in range(args.n)]
    key = x509.load_pem_x509_certificate(agent.certificate.encode()).public_key()

    start = time.perf_counter()
    for token in tokens:
        jwt.decode(token, key=key, algorithms=["EdDSA"])  # type: ignore[arg-type]
    floor = time.perf_counter() - start
    start = time.perf_counter()
    for token in tokens:
        identity = world.agents.authenticate(f"KubepamAgent {token}", "GET", target)
    ours = time.perf_counter() - start
    print(f"signed request   floor (PyJWT EdDSA decode) {rate(args.n, floor)}")
    print(f"                 ours (authenticate)       {rate(args.n, ours)}   ratio {ours / floor:.2f}x")

    body, _ = world.agents.document(identity)
    print(f"desired state    {len(body['accounts'])} accounts from {args.policies + 1} policies")
    start = time.perf_counter()
    for _ in range(args.n):
        hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    floor = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.n):
        world.agents.document(identity)
    ours = time.perf_counter() - start
    print(f"                 floor (json + sha256)      {rate(args.n, floor)}")
    print(f"                 ours (document)            {rate(args.n, ours)}   ratio {ours / floor:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
