"""Adapters: everything that talks to the world (Kubernetes API, issuers' JWKS over HTTP, keys and
signatures, PostgreSQL, metrics). They take plain values and return domain objects; no kopf here."""
