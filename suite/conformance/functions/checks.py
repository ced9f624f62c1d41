"""The checks of check_function, one method each, on one Function and one set of inputs.

Helpers here read what a Function declares (jvp, vmap, once_differentiable) so that
check_function (suite/conformance/functions/check.py) runs only the checks that apply.
Derivative checks see only the differentiable outputs: non-tensor outputs and integer or
mark_non_differentiable ones are left out (suite/conformance/functions/gradients.py).
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from suite.conformance.autograd.gradcheck import gradcheck_result, nondeterminism_tolerance
from suite.conformance.closeness import mismatch
from suite.conformance.autograd.jacobians import (bind, float_outputs, forward_jacobians, largest_gap,
                                                  numerical_jacobians, reverse_jacobians)
from suite.conformance.functions.gradients import (DIFFERENTIABLE, NON_DIFFERENTIABLE, NON_TENSOR, as_tuple,
                                                   declaration_as_backward, output_kind, silent_conversions,
                                                   with_backward)
from suite.errors import one_line

# assert_close's float64 defaults: two float64 implementations of one formula agree this well.
REFERENCE_RTOL, REFERENCE_ATOL = 1e-7, 1e-7
# Every @once_differentiable wrapper shares this code object, whatever function it wraps.
_ONCE_DIFFERENTIABLE_CODE = once_differentiable(lambda ctx: None).__code__


def defines(fn: type[Function], method: str) -> bool:
    return getattr(fn, method) is not getattr(Function, method)


def backward_method(fn: type[Function]) -> str:
    return "vjp" if defines(fn, "vjp") else "backward"


def is_once_differentiable(fn: type[Function]) -> bool:
    return getattr(getattr(fn, backward_method(fn)), "__code__", None) is _ONCE_DIFFERENTIABLE_CODE


def declares_vmap(fn: type[Function]) -> bool:
    return bool(getattr(fn, "generate_vmap_rule", False)) or defines(fn, "vmap")


def as_float64(inputs: tuple) -> tuple:
    """Floating tensors in float64, detached; they keep requires_grad, or all get it if none had it."""
    floats = [a for a in inputs if isinstance(a, torch.Tensor) and a.is_floating_point()]
    anyone = any(a.requires_grad for a in floats)
    out = []
    for a in inputs:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            out.append(a.detach().to(torch.float64).requires_grad_(a.requires_grad or not anyone))
        else:
            out.append(a.detach() if isinstance(a, torch.Tensor) else a)
    return tuple(out)


def _close(expected, actual, what: str, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL, labels=None) -> tuple[str, str]:
    """(verdict, detail) comparing two sequences of tensors by suite.conformance.closeness;
    None counts as zeros. Item k is called labels[k] in the detail, else "{what} {k}"."""
    if len(expected) != len(actual):
        return "fail", f"{len(actual)} {what}s, expected {len(expected)}"
    for k, (e, a) in enumerate(zip(expected, actual)):
        if e is None and a is None:
            continue
        e = torch.zeros_like(a) if e is None else e
        a = torch.zeros_like(e) if a is None else a
        why = mismatch(a, e, rtol=rtol, atol=atol)
        if why:
            return "fail", f"{labels[k] if labels else f'{what} {k}'}: {why}"
    return "pass", f"equal within rtol {rtol:g}, atol {atol:g}"


class FunctionChecks:
    """One Function on one set of float64 inputs; each method is one check -> (verdict, detail)."""

    def __init__(self, fn, inputs, reference, backward_reference=None):
        self.fn, self.reference, self.declared = fn, reference, backward_reference
        self.args = as_float64(tuple(inputs))
        self.diff = [i for i, a in enumerate(self.args) if isinstance(a, torch.Tensor) and a.requires_grad]
        self.once = is_once_differentiable(fn)
        self.output_kinds: list[str] = []  # per output of forward, from gradients.output_kind; set by forward()

    # --- helpers -------------------------------------------------------------------------
    def call_as(self, function: type[Function], *args):
        # Clones: an in-place Function (mark_dirty) must not modify gradcheck's leaves or our samples.
        return function.apply(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])

    def call(self, *args):
        return self.call_as(self.fn, *args)

    def call_declared(self, *args):
        """The Function with backward_reference as its backward: autograd applies to the declared
        gradients exactly what it applies to backward's (trailing Nones, summing, casting)."""
        backward = declaration_as_backward(self.declared, args)
        return self.call_as(with_backward(self.fn, backward_method(self.fn), backward, "Declared"), *args)

    def call_reference(self, *args):
        return self.reference(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])

    def differentiable_outputs(self, f, args=None):
        outs = as_tuple(f(*(args or self.args)))
        return [o for o, kind in zip(outs, self.output_kinds) if kind == DIFFERENTIABLE]

    def differentiable_call(self, *args):
        """The Function's differentiable outputs only: what gradcheck and the Jacobians compare."""
        return tuple(self.differentiable_outputs(self.call, args))

    def declared_differentiable_call(self, *args):
        return tuple(self.differentiable_outputs(self.call_declared, args))

    def positions(self, kind: str) -> list[int]:
        return [k for k, kind_k in enumerate(self.output_kinds) if kind_k == kind]

    def cotangents(self, outs, seed=1, requires_grad=False):
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device).requires_grad_(requires_grad)
                for o in outs]

    def first_grads(self, f, create_graph=False, args=None):
        args = args or self.args
        outs = self.differentiable_outputs(f, args)
        inputs = [args[i] for i in self.diff if args[i].requires_grad]
        # With create_graph the cotangents require grad, as in gradgradcheck: a once_differentiable
        # backward only plants its double-backward error when its incoming gradient requires grad.
        return outs, inputs, torch.autograd.grad(outs, inputs, self.cotangents(outs, requires_grad=create_graph),
                                                 allow_unused=True, create_graph=create_graph, retain_graph=True)

    def second_grads(self, f):
        """d<grad, w>/d inputs for a random w: a Hessian-vector product. None where it is zero."""
        _, inputs, grads = self.first_grads(f, create_graph=True)
        g = torch.Generator().manual_seed(2)
        weights = [torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device) for x in inputs]
        terms = [(gr * w).sum() for gr, w in zip(grads, weights) if gr is not None and gr.requires_grad]
        if not terms:  # no first-order gradient depends on the inputs: the second derivative is zero
            return tuple(None for _ in inputs)
        return torch.autograd.grad(sum(terms), inputs, allow_unused=True)

    # --- checks --------------------------------------------------------------------------
    def forward(self):
        outs = as_tuple(self.call(*self.args))
        self.output_kinds = [output_kind(o) for o in outs]
        differentiable = [outs[k] for k in self.positions(DIFFERENTIABLE)]
        if not differentiable:
            return "fail", "no output requires grad: the Function is not differentiable"
        shapes = ", ".join(str(tuple(o.shape)) for o in differentiable)
        left_out = [f"{len(self.positions(kind))} {kind}" for kind in (NON_DIFFERENTIABLE, NON_TENSOR)
                    if self.positions(kind)]
        return "pass", (f"{len(differentiable)} differentiable output(s) {shapes}; differentiable args {self.diff}"
                        + (f"; left out of derivative checks: {', '.join(left_out)} output(s)" if left_out else ""))

    def reference_output(self):
        return _close(float_outputs(self.call_reference(*self.args)), float_outputs(self.call(*self.args)), "output")

    def gradcheck(self):
        r = gradcheck_result("gradcheck", self.differentiable_call, self.args, fast_mode=False)
        return r.verdict, r.detail

    def backward_reference(self):
        """Backward against the declared (surrogate) gradient, for the same random cotangents."""
        _, _, mine = self.first_grads(self.call)
        _, _, declared = self.first_grads(self.call_declared)
        verdict, detail = _close(declared, mine, "gradient", labels=[f"gradient of arg {i}" for i in self.diff])
        return verdict, (f"backward equals the declared gradient ({detail})" if verdict == "pass"
                         else f"backward differs from backward_reference: {detail}")

    def gradgradcheck(self):
        r = gradcheck_result("gradgradcheck", self.differentiable_call, self.args, fast_mode=False)
        if r.verdict == "fail":
            return "fail", f"{r.detail}; {self._second_order_gap()}"
        return r.verdict, r.detail

    def _second_order_gap(self) -> str:
        """The worst entry of the Jacobian of (inputs, v) -> J^T v: numerical vs autograd's."""
        outs = self.differentiable_outputs(self.call)
        vs = self.cotangents(outs)
        n_in = len(self.diff)

        def backward_of(*xs_and_vs):
            # Finite differences call this under no_grad with plain tensors; backward needs a graph.
            with torch.enable_grad():
                xs = [x if x.requires_grad else x.detach().requires_grad_() for x in xs_and_vs[:n_in]]
                args = list(self.args)
                for i, x in zip(self.diff, xs):
                    args[i] = x
                out = self.differentiable_outputs(self.call, tuple(args))
                grads = torch.autograd.grad(out, xs, xs_and_vs[n_in:], create_graph=True, allow_unused=True)
            return tuple(g if g is not None else torch.zeros_like(x) for g, x in zip(grads, xs))

        points = [self.args[i].detach() for i in self.diff] + [v.detach() for v in vs]
        try:
            numerical = numerical_jacobians(backward_of, points)
            analytical = reverse_jacobians(backward_of, points)
        except Exception as error:
            return f"second-order Jacobian unavailable: {one_line(error)}"
        labels = self.diff + [f"v{k}" for k in range(len(vs))]
        return largest_gap(numerical, analytical, labels).replace("d(output", "d(grad")

    def once_differentiable(self):
        # Fresh leaves: backward() below accumulates into .grad, which must not touch the samples.
        args = tuple(a.detach().requires_grad_() if i in self.diff else a for i, a in enumerate(self.args))
        outs = self.differentiable_outputs(self.call, args)
        inputs = [args[i] for i in self.diff]
        # The cotangents require grad, as in gradgradcheck: a once_differentiable backward only
        # plants its error node when its incoming gradient requires grad.
        vs = self.cotangents(outs, requires_grad=True)
        grads = torch.autograd.grad(outs, inputs, vs, create_graph=True, allow_unused=True)
        carriers = [g for g in grads if g is not None and g.requires_grad]
        if not carriers:
            return "fail", "double backward does not raise: the gradients silently carry no graph"
        try:
            # backward() rather than grad(): grad() prunes the error node, which leads to no input.
            torch.autograd.backward(sum(g.sum() for g in carriers))
        except RuntimeError as error:
            if "once_differentiable" in str(error):
                return "pass", f"double backward raises: {one_line(error)}"
            return "fail", f"double backward raises, but not the once_differentiable error: {one_line(error)}"
        return "fail", "double backward gave numbers although backward is @once_differentiable"

    def forward_ad(self):
        if self.declared is not None:
            return self._jvp_against_declaration()
        r = gradcheck_result("forward_ad", self.differentiable_call, self.args, fast_mode=False,
                             check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False)
        return r.verdict, r.detail

    def _jvp_against_declaration(self):
        """A surrogate's jvp must be the transpose of its declared gradient, not the derivative:
        forward mode's Jacobian against the one backward_reference's gradients make."""
        jvp_of, diff, positions = bind(self.differentiable_call, self.args)
        declared_of, _, _ = bind(self.declared_differentiable_call, self.args)
        forward = forward_jacobians(jvp_of, diff)
        declared = reverse_jacobians(declared_of, diff)
        labels = [f"d(output {o})/d(arg {p})" for o in range(len(forward)) for p in positions]
        verdict, detail = _close([b for row in declared for b in row], [b for row in forward for b in row],
                                 "Jacobian", labels=labels)
        return verdict, (f"jvp is the transpose of the declared gradient ({detail})" if verdict == "pass"
                         else f"jvp disagrees with backward_reference: {detail}")

    def vmap(self):
        batch = 3
        g = torch.Generator().manual_seed(3)
        batched = [torch.randn((batch, *a.shape), generator=g, dtype=a.dtype).to(a.device)
                   if i in self.diff else a for i, a in enumerate(self.args)]
        in_dims = tuple(0 if i in self.diff else None for i in range(len(self.args)))

        def tensor_outputs(*args):  # vmap returns tensors only: a non-tensor output is left out
            return tuple(o for o in as_tuple(self.call(*args)) if isinstance(o, torch.Tensor))

        mapped = torch.func.vmap(tensor_outputs, in_dims=in_dims)(*batched)
        looped = [tensor_outputs(*[b[k] if d == 0 else b for b, d in zip(batched, in_dims)]) for k in range(batch)]
        stacked = [torch.stack([row[j] for row in looped]) for j in range(len(mapped))]
        verdict, detail = _close(stacked, mapped, "vmapped output", rtol=1e-10, atol=1e-12)
        if verdict == "fail":
            return verdict, detail

        def per_sample_vjp(*args):
            def of_diff(*xs):
                full = list(args)
                for i, x in zip(self.diff, xs):
                    full[i] = x
                return self.differentiable_call(*full)
            outs, pullback = torch.func.vjp(of_diff, *[args[i] for i in self.diff])
            return pullback(tuple(torch.ones_like(o) for o in outs))

        mapped_grads = torch.func.vmap(per_sample_vjp, in_dims=in_dims)(*batched)
        looped_grads = [per_sample_vjp(*[b[k] if d == 0 else b for b, d in zip(batched, in_dims)])
                        for k in range(batch)]
        stacked = [torch.stack([row[j] for row in looped_grads]) for j in range(len(mapped_grads))]
        verdict, detail = _close(stacked, mapped_grads, "vmapped vjp", rtol=1e-10, atol=1e-12)
        return verdict, ("outputs and per-sample vjps equal a loop over the batch" if verdict == "pass" else detail)

    def reentrant(self):
        outs = self.differentiable_outputs(self.call)
        inputs = [self.args[i] for i in self.diff]
        us = self.cotangents(outs)
        first = torch.autograd.grad(outs, inputs, us, retain_graph=True, allow_unused=True)
        second = torch.autograd.grad(outs, inputs, us, allow_unused=True)
        verdict, detail = _close(first, second, "gradient", rtol=0, atol=nondeterminism_tolerance(inputs))
        return verdict, ("the same backward twice gives identical gradients" if verdict == "pass"
                         else f"backward is not reentrant: {detail}")

    def grad_per_input(self):
        returned, refusal = self._probe_backward(self.args)
        if returned is None:
            return "fail", "backward was never called"
        if refusal is not None:  # autograd's own verdict on what backward returned, in its words
            return "fail", f"autograd refuses what backward returned: {one_line(refusal)}"
        plain = sum(not isinstance(a, torch.Tensor) for a in self.args)
        accepted = f"{len(self.args)} gradient(s), None for the {plain} non-tensor input(s)"
        return "pass", "; ".join([accepted, *silent_conversions(returned, self.args)])

    def _probe_backward(self, args) -> tuple[tuple | None, Exception | None]:
        """Run backward through a subclass that records what the user's backward returns.
        Returns (what it returned, the error autograd raised on it, if any)."""
        recorded: list[tuple] = []
        method = backward_method(self.fn)
        original = getattr(self.fn, method)

        def recording(ctx, *grads):
            result = original(ctx, *grads)
            recorded.append(result if isinstance(result, tuple) else (result,))
            return result

        probe = with_backward(self.fn, method, recording, "Probe")
        # Fresh leaves: backward() accumulates into .grad, which must not touch the samples.
        leaves = tuple(a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args)
        outs = [o for o in self.differentiable_outputs(lambda *a: self.call_as(probe, *a), leaves) if o.requires_grad]
        try:
            if outs:
                torch.autograd.backward(outs, self.cotangents(outs))
        except Exception as error:
            if not recorded:  # backward itself raised: reported by the check that ran it
                raise
            return recorded[0], error
        return (recorded[0] if recorded else None), None

    def non_differentiable(self):
        """Integer and mark_non_differentiable outputs stay out of autograd: no grad_fn even when
        the inputs come from a graph (as inside a model), no tangent in forward mode."""
        positions = self.positions(NON_DIFFERENTIABLE)
        mid_graph = tuple(a * 1 if i in self.diff else a for i, a in enumerate(self.args))
        outs = as_tuple(self.call(*mid_graph))
        tracked = [k for k in positions if outs[k].requires_grad or outs[k].grad_fn is not None]
        if tracked:
            return "fail", f"non-differentiable output(s) {tracked} require grad when the inputs come from a graph"
        modes = "no grad_fn"
        if defines(self.fn, "jvp"):
            with fwAD.dual_level():
                duals = tuple(fwAD.make_dual(a.detach(), torch.ones_like(a)) if i in self.diff else a
                              for i, a in enumerate(self.args))
                dual_outs = as_tuple(self.call(*duals))
                carried = [k for k in positions if fwAD.unpack_dual(dual_outs[k]).tangent is not None]
            if carried:
                return "fail", f"non-differentiable output(s) {carried} carry a tangent in forward mode"
            modes += ", no tangent in forward mode"
        described = ", ".join(f"output {k} ({str(outs[k].dtype).replace('torch.', '')})" for k in positions)
        return "pass", f"{described}: {modes}"

    def needs_input_grad(self):
        if len(self.diff) < 2:
            return "skip", "fewer than two differentiable inputs: nothing to freeze"
        _, _, full = self.first_grads(self.call)
        notes = []
        for k, frozen in enumerate(self.diff):
            args = tuple(a.detach() if i == frozen else a for i, a in enumerate(self.args))
            outs = self.differentiable_outputs(self.call, args)
            if not any(o.requires_grad for o in outs):
                continue
            _, _, partial = self.first_grads(self.call, args=args)
            expected = [g for j, g in enumerate(full) if j != k]
            labels = [f"gradient of arg {i}" for i in self.diff if i != frozen]
            verdict, detail = _close(expected, partial, "gradient", rtol=1e-12, atol=1e-12, labels=labels)
            if verdict == "fail":
                return "fail", f"with arg {frozen} frozen (needs_input_grad False) the others change: {detail}"
            returned, _ = self._probe_backward(args)
            if returned is not None and len(returned) > frozen and returned[frozen] is not None:
                notes.append(str(frozen))
        unused = f"; computes unneeded gradients for frozen arg(s) {', '.join(notes)} (allowed, wasted work)" \
            if notes else ""
        return "pass", "freezing any one input leaves the other gradients unchanged" + unused

    def compile(self):
        """Under torch.compile(backend="aot_eager", fullgraph=True), the outputs and gradients of
        eager. aot_eager runs eager's own kernels, so float64 results must agree to rounding. A
        Function dynamo cannot trace whole is tried again with graph breaks allowed; if its backend
        then receives no graph, the Function ran eagerly and the verdict is not_compiled: nothing
        compiled was compared. Only `apply` is compiled (the inputs are cloned outside), so a
        graph holds the Function's own work or nothing."""
        import torch._dynamo

        from suite.cases.expect import NOT_COMPILED
        from suite.conformance.compile.dynamo_log import watch_dynamo

        def outputs_and_grads(call):
            outs = self.differentiable_outputs(call)
            inputs = [self.args[i] for i in self.diff]
            return outs, torch.autograd.grad(outs, inputs, self.cotangents(outs), allow_unused=True)

        def cloned_into(compiled_apply):
            return lambda *args: compiled_apply(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])

        try:
            eager_outs, eager_grads = outputs_and_grads(self.call)
        except Exception as error:  # grad_per_input or gradcheck report it; there is nothing to compare
            return "skip", f"eager backward raises ({one_line(error, 120)})"
        broke = ""
        try:
            for fullgraph in (True, False):
                torch._dynamo.reset()  # a fresh trace: dynamo's cache would otherwise give up after 8 Functions
                compiled = torch.compile(lambda *args: self.fn.apply(*args), backend="aot_eager", fullgraph=fullgraph)
                try:
                    with watch_dynamo() as seen:
                        outs, grads = outputs_and_grads(cloned_into(compiled))
                    break
                except torch._dynamo.exc.Unsupported as error:  # what dynamo cannot trace: a break
                    if not fullgraph:
                        raise
                    broke = f"graph break: cannot be traced fullgraph ({one_line(error, 160)}); "
        except Exception as error:
            return "fail", f"raises under torch.compile: {one_line(error)}"
        finally:
            torch._dynamo.reset()
        for what, expected, actual in (("output", eager_outs, outs), ("gradient", eager_grads, grads)):
            verdict, detail = _close(expected, list(actual), f"compiled {what}")
            if verdict == "fail":
                return "fail", f"{broke}under torch.compile, {detail}"
        if seen.graphs == 0:
            return NOT_COMPILED, f"{broke}{seen.not_compiled_reason()}; the Function ran eagerly"
        return "pass", f"{broke}compiled (aot_eager) outputs and gradients equal eager's"

    def reference_grad(self):
        _, _, mine = self.first_grads(self.call)
        _, _, theirs = self.first_grads(self.call_reference)
        return _close(theirs, mine, "gradient", labels=[f"gradient of arg {i}" for i in self.diff])

    def reference_gradgrad(self):
        return _close(self.second_grads(self.call_reference), self.second_grads(self.call), "second-order gradient",
                      labels=[f"Hessian-vector product of arg {i}" for i in self.diff])
