"""kubepam: privileged access management that runs inside Kubernetes.

Layers (checked by import-linter, see pyproject.toml): ``handlers`` (kopf glue and the HTTP broker)
-> ``services`` (use cases) -> ``adapters`` (Kubernetes, HTTP, crypto) -> ``domain`` (pure decisions).
"""

__version__ = "0.1.0"
