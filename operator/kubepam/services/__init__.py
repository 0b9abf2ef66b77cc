"""Use cases: each combines domain decisions with adapters (token exchange, reconciles, scheduling)."""
