"""A user's code named `module:function` (or `module:Class.method`), as entry points name it.

Free of torch and of the rest of the suite, so that `torchsuite bisect`'s check runner can load
this file by its path in an interpreter whose `suite` is another commit's (suite.bisect.check_worker).
"""
from __future__ import annotations

import importlib
from typing import Callable

EXAMPLE = "mypkg.bench:time_parse"


class TargetNotFound(LookupError):
    """The target's module or attribute does not exist: nothing to run, as opposed to code that
    exists and raises."""

    def __str__(self) -> str:  # LookupError would quote the message
        return self.args[0]


def parse_target(target: str) -> tuple[str, str]:
    """(module, attribute path); ValueError when `target` is not module:function."""
    module, sep, attribute = target.partition(":")
    parts = [*module.split("."), *attribute.split(".")]
    if not sep or not all(part.isidentifier() for part in parts):
        raise ValueError(f"{target!r} is not module:function (for example {EXAMPLE})")
    return module, attribute


def load_target(target: str) -> Callable:
    """The callable `target` names. TargetNotFound when its module or attribute is absent; an
    error its module raises on import (a syntax error, a missing dependency) propagates."""
    module_name, attribute = parse_target(target)
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise TargetNotFound(f"no module {err.name!r} (from {target!r})") from None
        raise  # the module exists and one of its own imports is missing: its code is broken
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise TargetNotFound(f"{module_name} has no attribute {attribute!r} (from {target!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetNotFound(f"{target!r} is not callable")
    return obj
