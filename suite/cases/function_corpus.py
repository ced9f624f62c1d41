"""PyTorch's own corpus of custom Functions and what check_function must say about each.

The corpus is `torch.testing._internal.autograd_function_db` (14 Functions in torch 2.11, each
an OpInfo with sample inputs): torch's private test module, which needs `expecttest` and
`hypothesis`, so it is imported only by `corpus()`. check_function runs on the corpus's own
samples; `EXPECTED` declares every Function's verdict, so a Function torch adds must be
declared before its test passes. tests/test_function_corpus.py checks these verdicts and
docs/found.md reproduces the defects.

Under torch.compile all but one of them run eagerly: dynamo cannot trace a Function with a
custom jvp ("Unsupported custom jvp") and then traces nothing of its forward either, so the
compile check's backend receives no graph and its verdict is not_compiled (declared, `EAGER`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.autograd import Function

from suite.cases.expect import Expect, fails, not_compiled
from suite.cases.torch_testing import import_released

CORPUS_MODULE = "torch.testing._internal.autograd_function_db"


@dataclass(frozen=True)
class CorpusVerdict:
    # exactly the checks that must fail or compile nothing, and why; every other passes or skips
    expect: tuple[Expect, ...] = ()
    backward_reference: Callable | None = None  # a surrogate's intended gradient: with it, nothing fails
    wrong_backward_reference: Callable | None = None  # a declaration check_function must refuse

    @property
    def is_surrogate(self) -> bool:
        return self.backward_reference is not None


def scaled_gradient(factor: float) -> Callable:
    """backward_reference of a Function that returns each output's gradient times `factor`."""
    def gradient(inputs, grad_outputs):
        return tuple(None if g is None else factor * g for g in grad_outputs)

    return gradient


EAGER = not_compiled("compile", why="dynamo cannot trace a Function with a custom jvp ('Unsupported custom jvp') "
                                    "nor its forward: under torch.compile it runs eagerly")


def must_fail(checks: tuple[str, ...], why: str, *references: Callable, eager: bool = True) -> CorpusVerdict:
    """The verdict of a Function whose `checks` fail, for the reason `why` (a defect or a
    surrogate); eager: its compile check is not_compiled (EAGER)."""
    return CorpusVerdict((fails(*checks, why=why),) + ((EAGER,) if eager else ()), *references)


CONFORMS = CorpusVerdict((EAGER,))  # conforms, and runs eagerly under torch.compile
EXPECTED: dict[str, CorpusVerdict] = {
    "NumpyCube": CONFORMS,
    "NumpyExp_": CONFORMS,
    "NumpyMul": CONFORMS,
    "NumpyCubeNotComposable": must_fail(
        ("gradcheck",), "backward returns 3 x**2 whatever grad_output is: it never multiplies by it "
                        "(hidden in the corpus by a one-element sample, whose gradcheck cotangent is 1)",
        eager=False),  # no jvp: dynamo compiles it
    "NumpySort": must_fail(
        ("gradcheck", "forward_ad"), "forward returns x unsorted, while backward and jvp permute as if it had "
                                     "sorted"),
    "NumpyTake": CONFORMS,
    "Select": CONFORMS,
    "CubeGenVmap": must_fail(
        ("gradcheck", "gradgradcheck"), "backward returns grad_output * dinput + 6 * dinput: it ignores "
                                        "grad_saved (the gradient of the second output) and x"),
    "MulGenVmap": CONFORMS,
    "SortGenVmap": CONFORMS,
    "SelectGenVmap": CONFORMS,
    "ScaleGradGenVmap": must_fail(
        ("gradcheck", "forward_ad"), "a surrogate on purpose: an identity whose gradient and tangent are "
                                     "scaled by 3.14", scaled_gradient(3.14), scaled_gradient(1.0)),
    "ZeroGradientsGenVmap": must_fail(
        ("gradcheck", "forward_ad"), "a surrogate on purpose: two identities whose gradients and tangents are "
                                     "zero", scaled_gradient(0.0), scaled_gradient(1.0)),
    "ForwardHasDefaultArgs": CONFORMS,
}


def function_of(op: Callable, module) -> type[Function]:
    """The Function an OpInfo's op applies: `Fn.apply` itself, or a lambda that calls it."""
    owner = getattr(op, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, Function):
        return owner
    named = {getattr(module, name, None) for name in op.__code__.co_names}
    found = [f for f in named if isinstance(f, type) and issubclass(f, Function)]
    if len(found) != 1:
        raise LookupError(f"cannot tell which Function {op!r} applies: {found}")
    return found[0]


def import_corpus():
    """The corpus module, imported without its side effects on this process (torch's test
    utilities freeze the backend flags on import, among others: suite.cases.torch_testing)."""
    return import_released(CORPUS_MODULE)


def corpus(device: str = "cpu") -> Iterator[tuple[type[Function], tuple]]:
    """(Function, forward's arguments) for every sample of the corpus, float64, seeded.

    Raises ImportError (naming the missing module) when the corpus cannot be imported."""
    module = import_corpus()
    for info in module.autograd_function_db:
        fn = function_of(info.op, module)
        # The samples come from make_tensor, which draws from the global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            samples = list(info.sample_inputs(device, torch.float64, requires_grad=True))
        for sample in samples:
            if sample.kwargs:
                raise ValueError(f"{fn.__name__}: a sample with keyword arguments {sorted(sample.kwargs)}; "
                                 "Function.apply takes positional ones")
            yield fn, (sample.input, *sample.args)
