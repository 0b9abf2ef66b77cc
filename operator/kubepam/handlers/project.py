"""Project handlers: validate the spec and report Ready or Stalled with the reasons."""

from kubepam.handlers.generic import register_validation

register_validation("Project")
