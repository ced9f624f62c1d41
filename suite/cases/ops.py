"""Declared ops cases (filled by the issue that builds their checker)."""
from suite.cases.registry import Registry

CASES: Registry = Registry("op")
