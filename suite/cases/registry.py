"""A registry of declared cases: the one place every consumer reads cases from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Iterator, Protocol, TypeVar

from suite.errors import UnknownCaseError


class Case(Protocol):
    name: str


C = TypeVar("C", bound=Case)


class Registry(Generic[C]):
    """Named cases of one kind, in declaration order. Names are unique within a kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._cases: dict[str, C] = {}

    def add(self, case: C) -> C:
        if case.name in self._cases:
            raise ValueError(f"{self.kind} {case.name!r} is declared twice")
        self._cases[case.name] = case
        return case

    def get(self, name: str) -> C:
        try:
            return self._cases[name]
        except KeyError:
            raise UnknownCaseError(self.kind, name, self._cases) from None

    def select(self, names: list[str] | None) -> list[C]:
        """The named cases (every case when names is None); an unknown name is an error."""
        return list(self) if names is None else [self.get(n) for n in names]

    def names(self) -> list[str]:
        return list(self._cases)

    def __iter__(self) -> Iterator[C]:
        return iter(self._cases.values())

    def __len__(self) -> int:
        return len(self._cases)

    def __contains__(self, name: object) -> bool:
        return name in self._cases


@dataclass(frozen=True)
class Check:
    """A check a registry's cases take; the quick ones also run in `torchsuite run --quick`."""

    name: str
    quick: bool = False


def check_names(checks: tuple[Check, ...], quick: bool = False) -> tuple[str, ...]:
    """The names of `checks`; with quick=True, only the quick ones."""
    return tuple(c.name for c in checks if c.quick or not quick)
