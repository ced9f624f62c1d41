"""The suite's own torch.compile backends, registered by name on import.

The pool's workers receive a backend by name (a job is pickled; a function defined in a test
or a script is not always importable there), so a backend meant for them must be registered
in every process that looks it up: `lookup` imports this module first, which registers them.

`torchsuite_off_by_a_thousandth` is wrong on purpose: it runs the graph dynamo hands it as eager
would, then scales every floating-point output by 1.001. Plain training through it differs
from eager by about 1e-3 relative, far beyond float32's tolerance, so a check that compiles
with it must fail; one that passes has not looked at the compiled run.
"""
from __future__ import annotations

import torch

OFF_BY_A_THOUSANDTH = "torchsuite_off_by_a_thousandth"


def off_by_a_thousandth(graph: torch.fx.GraphModule, example_inputs):
    def run(*args):
        outputs = graph(*args)
        scaled = [o * 1.001 if isinstance(o, torch.Tensor) and o.is_floating_point() else o for o in outputs]
        return type(outputs)(scaled) if isinstance(outputs, (tuple, list)) else scaled

    return run


def _register() -> None:
    from torch._dynamo import list_backends, register_backend

    if OFF_BY_A_THOUSANDTH not in list_backends(exclude_tags=()):
        register_backend(off_by_a_thousandth, name=OFF_BY_A_THOUSANDTH)


_register()


def lookup(name: str):
    """The backend torch.compile knows as `name`, the suite's own included."""
    from torch import _dynamo

    return _dynamo.lookup_backend(name)
