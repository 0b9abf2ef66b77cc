"""The two halves of the operator, as two kopf registries.

- VIEW runs on every replica: the indexes the broker answers from, the in-memory upkeep that goes with
  them (CA rings, sync marks), start-up and clean-up. It writes nothing to the objects it watches.
- CONTROL runs on the leader only: every handler that reconciles (create, update, resume, delete, and
  the event handlers that act). It is started when this replica takes the leader Lease and stopped when
  it loses it.
"""

from __future__ import annotations

from kopf._core.intents.registries import SmartOperatorRegistry

VIEW = SmartOperatorRegistry()
CONTROL = SmartOperatorRegistry()
