"""A Function's outputs and gradients as autograd sees them, for check_function.

Autograd is the judge of what a backward may return, so no rule of its own is repeated here:
check_function runs backward through autograd and reports autograd's own error when it
refuses. What autograd accepts (torch 2.11) and does silently:
- more gradients than forward inputs, when the extra ones are None: dropped;
- a gradient whose shape the input's shape broadcasts to: summed to the input's shape;
- a gradient of another real dtype: cast to the input's dtype.
What it refuses: too few gradients, an extra one that is not None, a gradient (not None) for
a non-tensor input, anything but a tensor or None for a tensor input, a shape the input's
does not broadcast to, a complex gradient for a real input. `silent_conversions` names the
accepted conversions, so a report shows them.

A declared surrogate gradient (check_function's backward_reference) goes through the same
judge: `with_backward` swaps it in as the Function's backward.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.autograd import Function

DIFFERENTIABLE, NON_DIFFERENTIABLE, NON_TENSOR = "differentiable", "non-differentiable", "non-tensor"


def as_tuple(out) -> tuple:
    """forward's result as a tuple of outputs (a single output is a tuple of one)."""
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def output_kind(output) -> str:
    """Called with every floating input requiring grad: an output that does not require grad is
    non-differentiable (an integer tensor, or one marked with ctx.mark_non_differentiable)."""
    if not isinstance(output, torch.Tensor):
        return NON_TENSOR
    return DIFFERENTIABLE if output.requires_grad else NON_DIFFERENTIABLE


def with_backward(fn: type[Function], method: str, backward: Callable, prefix: str) -> type[Function]:
    """A subclass of `fn` whose backward (`method`: "backward" or "vjp") is `backward(ctx, *grads)`.
    Its forward, setup_context, jvp and vmap rule stay fn's."""
    return type(f"{prefix}{fn.__name__}", (fn,), {method: staticmethod(backward)})


def declaration_as_backward(backward_reference: Callable, args: tuple) -> Callable:
    """backward_reference(inputs, grad_outputs), called as a backward for the call on `args`.
    It gets copies of the inputs, so a declaration cannot change the samples."""
    inputs = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)

    def backward(ctx, *grad_outputs):
        declared = backward_reference(inputs, grad_outputs)
        return tuple(declared) if isinstance(declared, list) else declared

    return backward


def silent_conversions(returned: tuple, args: tuple) -> list[str]:
    """What autograd did, without an error, to gradients it accepted from backward."""
    notes = []
    if len(returned) > len(args):
        notes.append(f"{len(returned) - len(args)} trailing None gradient(s), which autograd drops")
    for i, (arg, grad) in enumerate(zip(args, returned)):
        if not (isinstance(arg, torch.Tensor) and arg.requires_grad and isinstance(grad, torch.Tensor)):
            continue
        if grad.shape != arg.shape:
            notes.append(f"arg {i}'s gradient of shape {tuple(grad.shape)} is summed by autograd to "
                         f"{tuple(arg.shape)}")
        if grad.dtype != arg.dtype:
            notes.append(f"arg {i}'s {grad.dtype} gradient is cast by autograd to {arg.dtype}")
    return notes
