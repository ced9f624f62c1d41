"""check_compile: is a model under torch.compile still the same model?

    report = check_compile(Net, x, y, loss_fn=F.cross_entropy, backend="inductor")
    print(report)            # one row per comparison: outputs, loss, gradients, parameters, buffers
    report.assert_passed()   # in a test: AssertionError with the table when a row fails

Three copies of model_fn() start from one state: eager float32, compiled float32 and eager
float64 (the reference). Each trains `steps` steps (zero_grad, forward, loss, backward,
optimizer step) on its own batch per step, every copy reseeded alike before each step, so
dropout draws one mask for all three unless the compiler draws its own. After every step the
outputs, the loss, each parameter's gradient, the parameters after the step and the buffers
of the compiled copy are judged by suite.conformance.compile.rule against the float64 run.
With mode="eval" the copies are in eval mode and run forward only, under no_grad.

Shapes are dynamic by default: the steps see two batch sizes, the first half of them the
batch's own and the rest a second size (3 steps: 8, 8, 4), so that a compiled graph runs
twice (a backend that replays its results shows) and then dynamo recompiles and, by its
default automatic_dynamic_shapes, hands the backend a graph with a symbolic batch size: the
graph real training reaches at its last, smaller batch. static_shapes=True keeps one shape.
The report says what dynamo did (suite.conformance.compile.dynamo_log): graphs compiled,
recompiles and the guard behind each. A backend that received no graph gives the verdict
"not_compiled": eager was compared with eager, so nothing was checked, and the report is
never "equivalent".

A backend that raises (while compiling or running) gives a failing report, never an exception.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
from torch.utils._pytree import tree_leaves

from suite.cases.expect import NOT_COMPILED
from suite.cases.variants import MODES
from suite.conformance.compile.dynamo_log import DynamoLog, watch_dynamo
from suite.conformance.compile.rule import TensorError, compare_tensor, rule_text
from suite.conformance.result import CheckResult, NamedChecks
from suite.errors import UnknownCaseError, one_line

CATEGORIES = ("outputs", "loss", "gradients", "parameters", "buffers")
EVAL_CATEGORIES = ("outputs", "loss", "buffers")
RAISES, VALUES = "raises", "values"  # a failing report's cause: the backend raised, or values differ
COMPILE_PARTS = ("model", "optimizer", "both")  # what the compiled copy compiles
# Not a torch.compile backend: the compiled copy is torch.export.export's program, as a module
# (ExportedProgram.module(), which shares the parameters), exported at the first step's batch
# with a dynamic batch size, trained and compared like a compiled one.
EXPORT = "export"


def default_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


@dataclass(frozen=True)
class CompileCheck(CheckResult):
    """One comparison over every step (verdict "pass" or "fail"): its worst tensor (step, name,
    error) decides it. A report whose backend received no graph has one row instead, "compile",
    with the verdict "not_compiled"."""

    worst: TensorError | None = None
    compared: int = 0  # tensors judged, over all steps


@dataclass
class CompileReport(NamedChecks):
    backend: str
    mode: str  # "train" or "eval"
    steps: int
    checks: list[CompileCheck] = field(default_factory=list)
    # One forward as torch._dynamo.explain traces it: its graphs and the breaks between them
    # (None when compilation failed before they could be counted).
    graph_breaks: int | None = None
    graph_count: int | None = None
    break_reasons: list[str] = field(default_factory=list)
    # The whole check, from dynamo's own records: the batch size of each step, the graphs the
    # backend received (every break and recompile adds one) and each recompile's failed guard.
    batch_sizes: list[int] = field(default_factory=list)
    dynamo: DynamoLog | None = None
    compile_s: float | None = None  # wall time of the first compiled step: tracing, compiling, one run
    error: str | None = None  # what the backend raised, in one line
    compile_parts: str = "model"  # what was compiled: the model, the optimizer step or both (COMPILE_PARTS)

    @property
    def verdict(self) -> str:
        """"pass", "fail" or "not_compiled" (the backend received no graph: nothing was checked)."""
        if any(c.verdict == "fail" for c in self.checks) or not self.checks:
            return "fail"
        return NOT_COMPILED if any(c.verdict == NOT_COMPILED for c in self.checks) else "pass"

    @property
    def passed(self) -> bool:
        """Equivalent to eager: compiled, and no row failed (a model dynamo ran eagerly is not)."""
        return self.verdict == "pass"

    @property
    def cause(self) -> str | None:
        """Of a failing report: RAISES (the backend or the compiled program raised) or VALUES."""
        return None if self.verdict != "fail" else RAISES if self.error else VALUES

    @property
    def graphs_compiled(self) -> int | None:
        return self.dynamo.graphs if self.dynamo else None

    @property
    def recompiles(self) -> list[str]:
        """One per recompile: the guard that failed, in dynamo's words."""
        return self.dynamo.recompiles if self.dynamo else []

    def summary(self) -> str:
        """One line: the verdict, the worst failing row (or the breaks and compile time)."""
        if self.error:
            return f"fails: {self.error}"
        if self.verdict == NOT_COMPILED:
            return f"not compiled: {self.check('compile').detail}"
        breaks = f"{self.graph_breaks} graph break(s)" if self.graph_breaks is not None else "graph breaks unknown"
        graphs = (f", {self.graphs_compiled} graph(s) compiled, {len(self.recompiles)} recompile(s)"
                  if self.dynamo and self.backend != EXPORT else ", exported once, batch size dynamic" if self.dynamo else "")
        timing = f", first step {self.compile_s:.1f} s" if self.compile_s is not None else ""
        if self.passed:
            return (f"equivalent to eager ({self.steps} {'training ' if self.mode == 'train' else 'eval '}steps "
                    f"of {_sizes(self.batch_sizes)}, {breaks}{graphs}{timing})")
        first = next(c for c in self.checks if c.verdict == "fail")
        return f"differs from eager: {first.name}: {first.detail} ({breaks}{graphs})"

    def __str__(self) -> str:
        status = {"pass": "equivalent", NOT_COMPILED: "NOT COMPILED (nothing was checked)"}.get(
            self.verdict, f"FAILS {', '.join(self.failures())}")
        parts = "" if self.compile_parts == "model" else f", compiled: {self.compile_parts}"
        lines = [f"check_compile(backend={self.backend}{parts}, {self.mode}, {self.steps} steps of "
                 f"{_sizes(self.batch_sizes)}): {status}", f"  rule: {rule_text()}"]
        if self.graph_breaks is not None:
            lines.append(f"  one forward: graphs {self.graph_count}, graph breaks {self.graph_breaks}"
                         + (f": {'; '.join(self.break_reasons)}" if self.break_reasons else ""))
        if self.dynamo is not None:
            lines.append(f"  all steps: {self.dynamo.graphs} graph(s) compiled, {self.dynamo.recompile_text()}")
        if self.compile_s is not None:
            lines.append(f"  first compiled step (compiles): {self.compile_s:.2f} s")
        width = max([len(c.name) for c in self.checks] + [5])
        verdict_width = max([len(c.verdict) for c in self.checks] + [4])
        lines += [f"  {c.name:<{width}}  {c.verdict:<{verdict_width}}  {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def assert_passed(self) -> "CompileReport":
        """For tests: AssertionError carrying the whole table when any row failed, or when nothing
        was compiled."""
        if not self.passed:
            raise AssertionError(f"\n{self}")
        return self


def backend_name(backend) -> str:
    return backend if isinstance(backend, str) else getattr(backend, "__name__", type(backend).__name__)


def _sizes(sizes: list[int]) -> str:
    return "batch " + ", ".join(map(str, dict.fromkeys(sizes))) if sizes else "unknown batches"


def second_batch_size(n: int) -> int:
    """The batch size of the later steps: half the batch, or twice it when half would be below 2
    (dynamo specialises sizes 0 and 1, so they would not reach a symbolic graph)."""
    return n // 2 if n >= 4 else 2 * n


def _resized(t: torch.Tensor, size: int) -> torch.Tensor:
    """The first `size` samples of t, t repeated first when it has fewer."""
    return torch.cat([t] * -(-size // len(t)))[:size] if size > len(t) else t[:size]


def _batches(inputs, targets, steps: int, static_shapes: bool = False) -> list[tuple]:
    """One (inputs, targets) per step. One batch given: step k uses it rolled by k samples, so
    that every step sees a different batch (a backend that replays old results shows). Unless
    static_shapes, batches of one size are cut to second_batch_size in the later half of the
    steps, so that dynamo recompiles for a second shape (a list that already has two sizes is
    kept)."""
    if isinstance(inputs, torch.Tensor):
        if not isinstance(targets, torch.Tensor):
            raise TypeError("inputs is one batch, so targets must be one tensor too")
        batches = [(inputs.roll(k, 0), targets.roll(k, 0)) for k in range(steps)]
    else:
        inputs, targets = list(inputs), list(targets)
        if len(inputs) != len(targets) or len(inputs) < steps:
            raise ValueError(f"{steps} steps need {steps} batches of inputs and targets; "
                             f"got {len(inputs)} and {len(targets)}")
        batches = list(zip(inputs, targets))[:steps]
    if static_shapes or len({len(x) for x, _ in batches}) > 1:
        return batches
    if steps < 2:
        raise ValueError("one step sees one batch size: dynamic shapes need steps >= 2, "
                         "or pass static_shapes=True")
    size, first_half = second_batch_size(len(batches[0][0])), (steps + 1) // 2
    return [(x, y) if k < first_half else (_resized(x, size), _resized(y, size)) for k, (x, y) in enumerate(batches)]


def _as_float64(value):
    return value.double() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


@dataclass
class _Copy:
    """One of the three programs: a module (compiled or not), its optimizer and input cast."""

    module: nn.Module
    params: nn.Module  # the eager module that owns the parameters (the compiled one wraps it)
    optimizer: torch.optim.Optimizer | None
    cast: Callable = lambda value: value
    optimizer_step: Callable | None = None  # set: optimizer.step under torch.compile

    def step(self, x, y, loss_fn, seed: int, train: bool) -> dict[str, dict[str, torch.Tensor]]:
        torch.manual_seed(seed)
        x, y = self.cast(x), self.cast(y)
        if not train:
            with torch.no_grad():
                out = self.module(x)
                loss = loss_fn(out, y)
            return {"outputs": _named_outputs(out), "loss": {"loss": loss},
                    "buffers": dict(self.params.named_buffers())}
        self.optimizer.zero_grad(set_to_none=True)
        out = self.module(x)
        loss = loss_fn(out, y)
        loss.backward()
        grads = {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                 for name, p in self.params.named_parameters()}
        (self.optimizer_step or self.optimizer.step)()
        return {"outputs": _named_outputs(out), "loss": {"loss": loss.detach()}, "gradients": grads,
                "parameters": {n: p.detach().clone() for n, p in self.params.named_parameters()},
                "buffers": {n: b.clone() for n, b in self.params.named_buffers()}}


def _named_outputs(out) -> dict[str, torch.Tensor]:
    leaves = [t.detach() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    return {"output": leaves[0]} if len(leaves) == 1 else {f"output[{i}]": t for i, t in enumerate(leaves)}


def _judge_step(step: int, compiled: dict, eager: dict, reference: dict, found: dict) -> None:
    for category, tensors in reference.items():
        for name, ref in tensors.items():
            if name not in compiled[category]:
                found[category].append(TensorError(step, name, 0.0, 0.0, 0.0, 0.0, "missing from the compiled run"))
                continue
            found[category].append(compare_tensor(step, name, compiled[category][name], eager[category][name], ref))


def _row(category: str, errors: list[TensorError]) -> CompileCheck:
    if not errors:
        return CompileCheck(category, "pass", "nothing to compare")
    worst = max(errors, key=lambda e: e.ratio)
    failing = sum(not e.passed for e in errors)
    if failing:
        return CompileCheck(category, "fail", f"{failing} of {len(errors)} tensors beyond the bound; worst "
                            f"{worst.describe()}", worst=worst, compared=len(errors))
    return CompileCheck(category, "pass", f"{len(errors)} tensors within; nearest its bound: {worst.describe()}",
                        worst=worst, compared=len(errors))


def _count_graphs(module: nn.Module, x, train: bool, report: CompileReport) -> None:
    """Graphs and breaks of the forward, from torch._dynamo.explain (its own tracing backend)."""
    import torch._dynamo

    with (contextlib.nullcontext() if train else torch.no_grad()):
        explained = torch._dynamo.explain(module)(x)
    # explain counts graph_count - 1 breaks: -1 for a forward dynamo compiled nothing of
    report.graph_count, report.graph_breaks = explained.graph_count, max(explained.graph_count - 1, 0)
    first_lines = ((str(r.reason).strip().splitlines() or [""])[0][:160] for r in explained.break_reasons)
    report.break_reasons = list(dict.fromkeys(first_lines))[:3]  # the distinct reasons, first three


def check_compile(model_fn: Callable[[], nn.Module], inputs, targets, *, loss_fn: Callable,
                  optimizer_fn: Callable | None = None, backend="inductor", steps: int = 3,
                  compile_mode: str | None = None, fullgraph: bool = False, mode: str = "train",
                  device: str = "cpu", inductor_config: dict | None = None, dynamo_config: dict | None = None,
                  context_fn: Callable[[], contextlib.AbstractContextManager] | None = None,
                  static_shapes: bool = False, compile_parts: str = "model", seed: int = 0) -> CompileReport:
    """Train eager, compiled and float64 copies of model_fn() side by side; never raises for a
    backend that fails. inputs/targets: one batch each, or a list of one per step; the steps
    see two batch sizes unless static_shapes (see _batches). optimizer_fn: params -> optimizer
    (default SGD, lr 0.01, momentum 0.9). backend: a name torch.compile knows or any callable
    backend; compile_mode (torch.compile's `mode`) and fullgraph go to torch.compile.
    inductor_config, dynamo_config: torch._inductor.config and torch._dynamo.config settings
    while compiling and running (for example {"fallback_random": True}, {"allow_rnn": True}).
    context_fn: a function returning a context every copy's steps run in (for example
    `lambda: torch.backends.mkldnn.flags(enabled=False)`). compile_parts: what the compiled copy
    compiles: "model" (its module), "optimizer" (`torch.compile(optimizer.step)`, the module
    eager) or "both". An unknown backend name raises UnknownCaseError."""
    import torch._dynamo

    import suite.conformance.compile.backends  # noqa: F401  (registers the suite's own backends by name)
    from suite.devices import require_device

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if mode not in MODES:
        raise ValueError(f"mode is one of {MODES}, not {mode!r}")
    train = mode == "train"
    if compile_parts not in COMPILE_PARTS:
        raise ValueError(f"compile_parts is one of {COMPILE_PARTS}, not {compile_parts!r}")
    if compile_parts != "model" and not train:
        raise ValueError("an eval check has no optimizer step to compile: compile_parts must be 'model'")
    if compile_mode is not None:
        _validate_compile_mode(compile_mode, backend)
    device = torch.device(device)
    if device.type != "cpu":
        require_device(device.type)
    elif backend == "inductor":
        from suite.vec_isa import share_vec_isa_probe

        share_vec_isa_probe()  # its checks in parallel, once a process (and none in its children)
    batches = [(x.to(device), y.to(device)) for x, y in _batches(inputs, targets, steps, static_shapes)]
    report = CompileReport(backend_name(backend), mode, steps, batch_sizes=[len(x) for x, _ in batches],
                           compile_parts=compile_parts)
    torch.manual_seed(seed)
    base = model_fn().to(device).train(train)
    copies = {}
    for name, dtype in (("eager", None), ("compiled", None), ("reference", torch.float64)):
        module = copy.deepcopy(base) if dtype is None else copy.deepcopy(base).to(dtype)
        optimizer = (optimizer_fn or default_optimizer)(module.parameters()) if train else None
        copies[name] = _Copy(module, module, optimizer, _as_float64 if dtype else (lambda v: v))
    options = {"backend": backend, "fullgraph": fullgraph, **({"mode": compile_mode} if compile_mode else {})}
    torch._dynamo.reset()  # nothing compiled for an earlier model may answer for this one
    compiled = copies["compiled"]
    if backend == EXPORT:
        if compile_parts != "model" or compile_mode or fullgraph:
            raise ValueError("torch.export exports the model: compile_parts 'model', no compile_mode nor fullgraph")
        try:
            compiled.module = _exported(compiled.params, batches[0][0])
        except Exception as error:  # what export refuses is the finding
            report.error = one_line(error)
            report.checks = [CompileCheck("compile", "fail", f"torch.export raised {report.error}")]
            return report
    try:
        if backend != EXPORT and compile_parts in ("model", "both"):
            compiled.module = torch.compile(compiled.params, **options)
        if backend != EXPORT and compile_parts in ("optimizer", "both"):
            compiled.optimizer_step = torch.compile(compiled.optimizer.step, **options)
    except torch._dynamo.exc.InvalidBackend:
        raise UnknownCaseError("torch.compile backend", backend_name(backend),
                               torch._dynamo.list_backends(exclude_tags=())) from None

    found = {c: [] for c in (CATEGORIES if train else EVAL_CATEGORIES)}
    settings = _Settings(inductor_config, dynamo_config, context_fn)
    try:
        _run_steps(copies, batches, loss_fn, seed, train, device, settings, report, found)
    finally:
        torch._dynamo.reset()  # the compiled copy's graphs do not outlive the check
    if report.error is None and report.dynamo.graphs == 0 and backend != EXPORT:
        # the compiled copy ran eagerly: its values are eager's, and agreeing with them proves nothing
        report.checks = [CompileCheck("compile", NOT_COMPILED, f"{report.dynamo.not_compiled_reason()}; "
                                      f"{report.steps} step(s) ran eagerly, nothing compiled was compared")]
    elif report.error is None:
        report.checks = [_row(category, errors) for category, errors in found.items()]
    return report


def _exported(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """torch.export's program of `module` (batch size dynamic), as a module sharing its parameters."""
    program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    return program.module()


def _validate_compile_mode(mode: str, backend) -> None:
    from torch._inductor import list_mode_options

    if backend != "inductor":
        raise ValueError(f"compile_mode is inductor's option; backend {backend_name(backend)!r} takes none")
    if mode not in list_mode_options():
        raise ValueError(f"unknown torch.compile mode {mode!r}; valid: {', '.join(list_mode_options())}")


def _run_steps(copies, batches, loss_fn, seed, train, device, settings, report, found) -> None:
    """Every step of the three copies, judged; a compiled step that raises ends it in report.error."""
    from suite.devices import synchronize

    eager_module = copies["eager"].params
    with settings.applied(), watch_dynamo() as report.dynamo:
        for k, (x, y) in enumerate(batches, start=1):
            step_seed = seed * 1000 + k
            reference = copies["reference"].step(x, y, loss_fn, step_seed, train)
            eager = copies["eager"].step(x, y, loss_fn, step_seed, train)
            start = time.perf_counter()
            try:
                compiled = copies["compiled"].step(x, y, loss_fn, step_seed, train)
                synchronize(device)
            except Exception as error:  # the backend's failure is the finding
                inner = getattr(error, "inner_exception", None)  # dynamo wraps what a backend raised
                report.error = one_line(error) + (f" {one_line(inner)}" if inner is not None else "")
                report.checks = [CompileCheck("compile", "fail", f"step {k} raised {report.error}")]
                return
            if k == 1:
                report.compile_s = time.perf_counter() - start
            _judge_step(k, compiled, eager, reference, found)
    with settings.applied():
        try:
            _count_graphs(eager_module, batches[0][0], train, report)
        except Exception as error:  # counting is a help, not a verdict
            report.break_reasons = [f"could not count graphs: {one_line(error)}"]


@dataclass(frozen=True)
class _Settings:
    """What every step runs under: compiler configuration and the caller's context."""

    inductor: dict | None = None
    dynamo: dict | None = None
    context_fn: Callable | None = None

    @contextlib.contextmanager
    def applied(self):
        with contextlib.ExitStack() as stack:
            if self.inductor:
                import torch._inductor.config as inductor_config

                stack.enter_context(inductor_config.patch(self.inductor))
            if self.dynamo:
                import torch._dynamo.config as dynamo_config

                stack.enter_context(dynamo_config.patch(self.dynamo))
            if self.context_fn is not None:
                stack.enter_context(self.context_fn())
            yield
