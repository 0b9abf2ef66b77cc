"""Errors the domain raises for input that breaks a rule, each naming the field it is about."""

from __future__ import annotations


class SpecError(ValueError):
    """One or more problems in a resource spec; each problem names its field path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))
