"""torch.compile conformance: check_compile catches wrong backends and passes rounding, the declared
cases reach their verdicts, and compiled timings reach the report only behind a passing check.

The backends below are wrong the way real ones can be, built on aot_autograd (the machinery of
aot_eager and inductor) so that they see the same forward and backward graphs: an op lowered
wrongly, a backward that is off by a fraction of a percent, a forward that replays the results
of its first call. One more differs from eager only by float32 rounding, and must pass.
"""
import copy
import json
import os
import re
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.backends.common import aot_autograd

from suite import check_compile, time_model
from suite.cases.compile import CASES
from suite.cases.models import CASES as MODELS, standard_models
from suite.cases.parallel import tiny_mlp
from suite.conformance.compile.declared import check_case, judge, verdicts
from suite.errors import SuiteError, UnknownCaseError


NO_CXX = shutil.which("g++") is None and shutil.which("c++") is None


# The default run's costly cases, a process's first inductor compile (10 s here) and a standard
# workload's steps (8 s), are checked in one interpreter of their own, launched when collection ends
# (tests/conftest.py) on the core this process leaves; their tests read its verdicts, last. It pays
# inductor's vector-ISA check itself, so this process needs none. `slow` cases are checked here.
_CHECK_IN_BACKGROUND = """
import json, sys, traceback
import torch
from suite.cases.compile import CASES
from suite.conformance.compile.declared import check_case, judge

torch.set_num_threads(1)  # beside the test run's own process, as it checks its cases
for name in sys.argv[1:]:
    case = CASES.get(name)
    try:
        report = check_case(case)
        passed, detail = judge(case, report)
        detail = f"{detail}\\n{report}"
    except Exception:
        passed, detail = False, traceback.format_exc()
    print(json.dumps({"case": name, "passed": passed, "detail": detail}), flush=True)
"""


def _in_background(case) -> bool:
    return not case.slow and (case.backend == "inductor" or case.model_name in standard_models())


def _marks(case):
    # inductor builds CPU kernels with a C++ compiler, which scripts/setup.sh installs
    inductor = case.backend == "inductor"
    marks = [pytest.mark.skipif(NO_CXX, reason="inductor needs a C++ compiler (g++); none on PATH")] if inductor else []
    if _in_background(case):
        if not (inductor and NO_CXX):  # a skipped test needs no check
            marks.append(pytest.mark.launch([sys.executable, "-c", _CHECK_IN_BACKGROUND], share="compile-checks",
                                            args=[case.name], early=True))
    elif inductor:
        marks.append(pytest.mark.vec_isa)
    # Inductor's first compile in a process takes 10 to 17 s here, a recurrent layer's seconds
    # under any backend: the cases declare which are `slow` (the default run keeps the dropout
    # cases, inductor's random-number divergence both ways).
    # A case declared for GPUs alone (CUDA graphs, mode="reduce-overhead") runs on one, and is
    # skipped with the plugin's reason naming the missing CUDA device where there is none.
    marks += [pytest.mark.gpu] if case.devices == ("cuda",) else []
    return marks + ([pytest.mark.slow] if case.slow else [])


_REPORTS = {}


def _checked(case, device="cpu"):
    """check_case, once per case and test run: the records test below reuses the reports of the
    declared cases' tests (each check compiles twice, for two batch sizes) instead of checking
    every quick case again."""
    if (case.name, device) not in _REPORTS:
        _REPORTS[case.name, device] = check_case(case, device)
    return _REPORTS[case.name, device]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_marks(c)) for c in CASES])
def test_declared_case_reaches_its_verdict(case, request):
    if _in_background(case):
        returncode, output = request.getfixturevalue("launched").wait(timeout=540)
        checked = _verdict_lines(output)
        assert case.name in checked, f"the background checks ended (exit {returncode}) before {case.name}:\n{output}"
        passed, detail = checked[case.name]["passed"], checked[case.name]["detail"]
    else:
        report = _checked(case, "cuda" if case.devices == ("cuda",) else "cpu")
        passed, detail = judge(case, report)
        detail = f"{detail}\n{report}"
    assert passed, detail


def _verdict_lines(output: str) -> dict:
    """{case: its verdict line} from the background checks' output (warnings and all)."""
    lines = (line for line in output.splitlines() if line.startswith('{"case": '))
    return {verdict["case"]: verdict for verdict in map(json.loads, lines)}


# -- backends of our own -------------------------------------------------------------------------

def _rewrite_forward(rewrite):
    """An aot_autograd backend whose forward graph goes through `rewrite(graph)` first."""
    def fw_compiler(gm, example_inputs):
        rewrite(gm.graph)
        gm.recompile()
        return gm
    return aot_autograd(fw_compiler=fw_compiler, bw_compiler=lambda gm, example_inputs: gm)


def _relu_as_leaky(graph):
    for node in graph.nodes:
        if node.target is torch.ops.aten.relu.default:
            node.target, node.args = torch.ops.aten.leaky_relu.default, (node.args[0], 0.01)


relu_lowered_wrongly = _rewrite_forward(_relu_as_leaky)


def _scaled(outputs, factor):
    return [o * factor if isinstance(o, torch.Tensor) and o.is_floating_point() else o for o in outputs]


backward_off_by_0_2_percent = aot_autograd(
    fw_compiler=lambda gm, example_inputs: gm,
    bw_compiler=lambda gm, example_inputs: (lambda *args: _scaled(gm(*args), 1.002)))


def _replaying_forward(gm, example_inputs):
    first = []

    def run(*args):
        if not first:
            first.append(gm(*args))
        return first[0]
    return run


replays_first_results = aot_autograd(fw_compiler=_replaying_forward, bw_compiler=lambda gm, example_inputs: gm)


def _off_by_one_ulp(outputs):
    """Every float value one unit in the last place up or down, at random: rounding, nothing else."""
    g = torch.Generator().manual_seed(0)
    out = []
    for o in outputs:
        if isinstance(o, torch.Tensor) and o.dtype == torch.float32:
            sign = torch.randint(0, 2, o.shape, generator=g).to(o.device) * 2 - 1
            o = o + sign * torch.finfo(torch.float32).eps * o.abs()
        out.append(o)
    return out


rounds_differently = aot_autograd(
    fw_compiler=lambda gm, example_inputs: (lambda *args: _off_by_one_ulp(gm(*args))),
    bw_compiler=lambda gm, example_inputs: (lambda *args: _off_by_one_ulp(gm(*args))))


def raises_while_compiling(gm, example_inputs):
    raise NotImplementedError("no kernel for aten::addmm on this device")


def _gelu_as_tanh(graph):
    for node in graph.nodes:
        if node.target is torch.ops.aten.gelu.default:
            node.kwargs = {**node.kwargs, "approximate": "tanh"}


_eager_graphs = aot_autograd(fw_compiler=lambda gm, example_inputs: gm, bw_compiler=lambda gm, example_inputs: gm)
_gelu_lowered_as_tanh = _rewrite_forward(_gelu_as_tanh)


def gelu_as_tanh_when_dynamic(gm, example_inputs):
    """GELU lowered to its tanh approximation only in a graph with a symbolic shape (a SymInt
    among its inputs): right for every static shape, wrong once dynamo goes dynamic."""
    dynamic = any(isinstance(value, torch.SymInt) for value in example_inputs)
    return (_gelu_lowered_as_tanh if dynamic else _eager_graphs)(gm, example_inputs)


def gelu_as_tanh_from_the_second_compile():
    compiles = []

    def backend(gm, example_inputs):
        compiles.append(gm)
        return (_gelu_lowered_as_tanh if len(compiles) > 1 else _eager_graphs)(gm, example_inputs)
    return backend


def gelu_mlp():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))


def _lenet(backend, steps=3, **kwargs):
    spec = MODELS.get("cifar10_lenet")
    batches = [spec.example_batch(8, seed=s) for s in range(steps)]
    return check_compile(spec.factory, [x for x, _ in batches], [y for _, y in batches], loss_fn=spec.loss_fn,
                         optimizer_fn=spec.make_optimizer, backend=backend, steps=steps, **kwargs)


def test_an_op_lowered_wrongly_is_caught_in_the_outputs():
    report = _lenet(relu_lowered_wrongly)
    assert not report.passed and report.error is None
    outputs = report.check("outputs")
    assert outputs.verdict == "fail" and outputs.worst.step == 1 and outputs.worst.compiled > 10 * outputs.worst.bound


def test_gradients_wrong_by_a_fraction_of_a_percent_in_backward_only_are_caught():
    report = _lenet(backward_off_by_0_2_percent, steps=1, static_shapes=True)
    assert report.failures() == ["gradients"]  # parameters move by lr x 0.2%: below their floor
    assert report.check("outputs").passed and report.check("loss").passed
    worst = report.check("gradients").worst
    assert worst.step == 1 and worst.compiled > worst.bound
    # the error is 0.2% of each gradient: the rule sees it although it is tiny in absolute terms
    assert worst.compiled == pytest.approx(0.002 * worst.scale, rel=0.05)


def test_a_backend_that_replays_its_first_results_is_caught_at_the_second_step():
    report = _lenet(replays_first_results)  # the first two steps share a shape, so a graph runs twice
    outputs = report.check("outputs")
    assert outputs.verdict == "fail" and outputs.worst.step == 2


def test_a_backend_that_only_rounds_differently_passes():
    report = _lenet(rounds_differently)
    report.assert_passed()
    assert all(c.worst.compiled > 0 for c in report.checks if c.worst)  # it did change the values


def test_a_backend_that_raises_is_a_failing_report_not_a_crash():
    report = _lenet(raises_while_compiling)
    assert not report.passed
    assert report.backend == "raises_while_compiling"
    assert report.failures() == ["compile"] and "no kernel for aten::addmm" in report.error
    assert "\n" not in report.check("compile").detail
    with pytest.raises(AssertionError, match="FAILS compile"):
        report.assert_passed()


@pytest.mark.parametrize("backend", [gelu_as_tanh_when_dynamic, gelu_as_tanh_from_the_second_compile()],
                         ids=["symbolic_shapes_only", "second_compile_only"])
def test_a_backend_wrong_only_after_a_recompile_is_caught_from_one_batch(backend):
    x, y = torch.randn(8, 8), torch.randint(0, 4, (8,))
    report = check_compile(gelu_mlp, x, y, loss_fn=F.cross_entropy, backend=backend)
    assert report.batch_sizes == [8, 8, 4] and report.graphs_compiled == 2
    assert report.verdict == "fail" and report.check("outputs").worst.step == 3, f"\n{report}"
    (guard,) = report.recompiles  # dynamo's own words for the guard that failed
    assert "size mismatch at index 0. expected 8, actual 4" in guard and guard in str(report)


def test_static_shapes_keep_one_batch_size_and_miss_what_only_a_recompile_shows():
    x, y = torch.randn(8, 8), torch.randint(0, 4, (8,))
    report = check_compile(gelu_mlp, x, y, loss_fn=F.cross_entropy, backend=gelu_as_tanh_when_dynamic,
                           static_shapes=True)
    assert report.passed and report.batch_sizes == [8, 8, 8]
    assert (report.graphs_compiled, report.recompiles) == (1, [])
    with pytest.raises(ValueError, match="dynamic shapes need steps >= 2, or pass static_shapes=True"):
        check_compile(gelu_mlp, x, y, loss_fn=F.cross_entropy, backend="aot_eager", steps=1)
    sizes = check_compile(gelu_mlp, [x, x[:6]], [y, y[:6]], loss_fn=F.cross_entropy, backend="aot_eager", steps=2)
    assert sizes.batch_sizes == [8, 6] and sizes.passed  # batches of two sizes are kept as given


def test_a_model_dynamo_runs_eagerly_is_not_compiled_never_equivalent():
    from suite.cases.compile import lstm_classifier

    x, y = torch.randn(8, 5, 8), torch.randint(0, 4, (8,))
    report = check_compile(lstm_classifier, x, y, loss_fn=F.cross_entropy, backend="aot_eager")
    assert report.verdict == "not_compiled" and not report.passed and report.failures() == []
    assert report.graphs_compiled == 0 and report.graph_breaks == 0  # explain's count said -1
    assert report.summary().startswith("not compiled: the backend received no graph: Attempted to wrap RNN")
    assert "equivalent" not in report.summary() and "equivalent" not in str(report)
    with pytest.raises(AssertionError, match="NOT COMPILED"):
        report.assert_passed()


def test_fullgraph_on_a_data_dependent_branch_fails_and_without_it_the_break_is_counted():
    case = CASES.get("data_dependent_branch_aot_eager_train")
    inputs, targets = case.data()
    strict = check_compile(case.model, inputs, targets, loss_fn=case.loss, backend="aot_eager", fullgraph=True)
    assert not strict.passed and strict.error and strict.graph_breaks is None
    lenient = check_compile(case.model, inputs, targets, loss_fn=case.loss, backend="aot_eager")
    assert lenient.passed and lenient.graph_breaks == 1 and lenient.graph_count == 2
    assert lenient.break_reasons and "1 graph break" in lenient.summary()


def test_eval_mode_compares_outputs_and_buffers_only():
    report = _lenet("aot_eager", mode="eval")
    assert [c.name for c in report.checks] == ["outputs", "loss", "buffers"] and report.passed


def test_one_batch_is_rolled_so_that_each_step_sees_another():
    x, y = torch.randn(6, 8), torch.randint(0, 4, (6,))
    report = check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, backend=replays_first_results, steps=2,
                           static_shapes=True)
    assert report.check("outputs").worst.step == 2 and not report.passed


def test_bad_input_is_a_clear_error():
    x, y = torch.randn(4, 8), torch.randint(0, 4, (4,))
    with pytest.raises(UnknownCaseError, match="unknown torch.compile backend 'nope'; valid: .*inductor"):
        check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, backend="nope")
    with pytest.raises(ValueError, match="unknown torch.compile mode 'fastest'; valid: default"):
        check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, compile_mode="fastest")
    with pytest.raises(ValueError, match="compile_mode is inductor's option; backend 'aot_eager' takes none"):
        check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, backend="aot_eager", compile_mode="max-autotune")
    with pytest.raises(ValueError, match="mode is one of"):
        check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, mode="inference")
    with pytest.raises(ValueError, match="3 steps need 3 batches"):
        check_compile(tiny_mlp, [x, x], [y, y], loss_fn=F.cross_entropy, backend="aot_eager", steps=3)
    if not torch.cuda.is_available():
        with pytest.raises(SuiteError, match="device 'cuda' requested but unavailable"):
            check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, device="cuda")


def test_run_verdicts_quick_are_the_quick_cases_and_carry_what_the_report_joins_on(monkeypatch):
    monkeypatch.setattr("suite.conformance.compile.declared.check_case", _checked)
    records = list(verdicts("cpu", quick=True))
    # By hand from suite/cases/compile.py: quick runs take every aot_eager case (inductor's
    # compiles cost seconds each), in declaration order: the article's three models train and
    # eval, then the dropout MLP (train only), the BatchNorm MLP, the data-dependent branch, the
    # recurrent layers, SGD's step compiled and the MLP exported.
    assert [r["case"] for r in records] == [
        "mnist_cnn_aot_eager_train", "mnist_cnn_aot_eager_eval",
        "cifar10_lenet_aot_eager_train", "cifar10_lenet_aot_eager_eval",
        "speech_cnn_aot_eager_train", "speech_cnn_aot_eager_eval",
        "dropout_mlp_aot_eager_train",
        "batchnorm_mlp_aot_eager_train", "batchnorm_mlp_aot_eager_eval",
        "data_dependent_branch_aot_eager_train",
        "gru_aot_eager_train", "lstm_aot_eager_train",
        "mlp_sgd_momentum_compiled_optimizer_aot_eager_train", "mlp_export_train",
    ]
    assert all(r["passed"] for r in records), [r["detail"] for r in records if not r["passed"]]
    lenet = next(r for r in records if r["case"] == "cifar10_lenet_aot_eager_train")
    assert (lenet["model"], lenet["backend"], lenet["mode"], lenet["compile_passed"], lenet["compile_verdict"]) == \
        ("cifar10_lenet", "aot_eager", "train", True, "pass")
    assert (lenet["batch_sizes"], lenet["graphs_compiled"], lenet["recompiles"]) == ([8, 8, 4], 2, 1)
    lstm = next(r for r in records if r["case"] == "lstm_aot_eager_train")
    assert (lstm["compile_passed"], lstm["compile_verdict"], lstm["graphs_compiled"]) == (False, "not_compiled", 0)


# -- timing and the report -----------------------------------------------------------------------

FAST = {"quick": True, "min_run_time": 0.05, "batch_size": 8}


def test_the_cache_copy_adds_entries_and_never_rewrites_one_a_process_may_have_loaded(tmp_path):
    # A kernel library rewritten in place under a process that loaded it crashed that process at
    # its next garbage collection: the run itself, after its compile checks loaded the same entry.
    import shutil

    from suite.timing.compiled import _add_if_absent

    fresh, own = tmp_path / "fresh", tmp_path / "own"
    for root, text in ((fresh, "rebuilt"), (own, "loaded")):
        (root / "ab").mkdir(parents=True)
        (root / "ab" / "kernel.so").write_text(text)
    (fresh / "cd").mkdir()
    (fresh / "cd" / "new.so").write_text("new")
    loaded = (own / "ab" / "kernel.so").stat().st_ino
    shutil.copytree(fresh, own, dirs_exist_ok=True, copy_function=_add_if_absent)
    assert (own / "ab" / "kernel.so").read_text() == "loaded" and (own / "ab" / "kernel.so").stat().st_ino == loaded
    assert (own / "cd" / "new.so").read_text() == "new"
    assert sorted(p.name for p in own.rglob("*")) == ["ab", "cd", "kernel.so", "new.so"]  # no partial file left


def test_a_compile_setup_is_timed_after_compiling_with_both_compile_times_recorded():
    record = time_model("speech_cnn", mode="eval", setup="cpu-compile", compile_backend="aot_eager", **FAST)
    assert (record["setup"], record["device"], record["world_size"], record["compile_backend"]) == \
        ("cpu-compile", "cpu", 1, "aot_eager")
    assert record["compile_cold_s"] > 0 and record["compile_warm_s"] > 0 and record["samples"]
    eager = time_model("speech_cnn", mode="eval", **FAST)
    assert eager["compile_backend"] is None and eager["compile_cold_s"] is None
    # a run's later processes: compiled once, the compile not timed again
    again = time_model("speech_cnn", mode="eval", setup="cpu-compile", compile_backend="aot_eager",
                       measure_compile=False, **FAST)
    assert again["compile_cold_s"] is None and again["compile_warm_s"] is None and again["samples"]
    with pytest.raises(SuiteError, match="compile_backend needs a compile setup"):
        time_model("speech_cnn", mode="eval", compile_backend="aot_eager", **FAST)


def _compiled_report(tmp_path, eager: dict, verdict_passed: bool) -> str:
    from suite.environment import capture
    from suite.report import build_report
    from suite.results import ResultsStore

    store = ResultsStore(tmp_path / "results", capture("compiled-box"))
    store.add(eager)
    # the compile setup's record, as a run where inductor is exactly twice as fast
    compiled = copy.deepcopy(eager)
    compiled.update(setup="cpu-compile", compile_backend="inductor", compile_cold_s=12.5, compile_warm_s=0.4,
                    median_s=compiled["median_s"] / 2, samples=[s / 2 for s in compiled["samples"]],
                    throughput=compiled["throughput"] * 2)
    store.add(compiled)
    store.add({"kind": "conformance", "suite": "compile", "case": "speech_cnn_inductor_eval", "check": "equivalence",
               "device": "cpu", "passed": verdict_passed, "compile_passed": verdict_passed, "model": "speech_cnn",
               "backend": "inductor", "mode": "eval", "graph_breaks": 0, "seconds": 1.0,
               "detail": "as expected equivalent" if verdict_passed else "NOT as expected: outputs differ"})
    store.finish("complete")
    build_report([store.path], out_dir=tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    return text.split("## Compiled vs eager (torch.compile)")[1].split("\n## ")[0]


def test_the_report_shows_a_compiled_speedup_only_behind_a_passing_check(tmp_path, tables_only):
    eager = {"kind": "timing", **time_model("speech_cnn", mode="eval", **FAST)}
    shown = _compiled_report(tmp_path / "pass", eager, verdict_passed=True)
    assert re.search(r"\| 2x", shown) and "passed (inductor, 0 graph breaks)" in shown and "12.5" in shown
    hidden = _compiled_report(tmp_path / "fail", eager, verdict_passed=False)
    assert "not shown" in hidden and "FAILED: NOT as expected: outputs differ" in hidden
    assert not re.search(r"\| 2x", hidden)


def test_the_report_shows_no_speedup_for_a_model_whose_check_compiled_nothing():
    import types

    import pandas as pd

    from suite.report.compiled import table

    row = dict(machine="box", source="run.json", model="speech_cnn", mode="eval", device="cpu", batch_size=8,
               dtype="float32", threads_setting="all", compile_backend="inductor", figure_flags=[],
               compile_cold_s=3.0, compile_warm_s=0.1)
    long = pd.DataFrame([{**row, "setup": "cpu", "median_s": 2.0, "throughput": 4.0},
                         {**row, "setup": "cpu-compile", "median_s": 2.0, "throughput": 4.0}])
    verdict = {"suite": "compile", "model": "speech_cnn", "backend": "inductor", "mode": "eval", "device": "cpu",
               "passed": True, "compile_passed": False, "compile_verdict": "not_compiled",
               "detail": "as expected not compiled"}
    loaded = [types.SimpleNamespace(machine_name="box", source="run.json", verdicts=[verdict])]
    (shown,) = table(loaded, long).to_dict("records")
    assert shown["compiled speedup"] == "not shown"
    assert shown["compile check"] == "NOT COMPILED: as expected not compiled"


def test_the_runs_plan_has_the_compile_source_and_full_runs_time_the_compile_setup():
    from suite.runner import make_plan

    _, _, quick = make_plan(device_request="cpu", model_names=["speech_cnn"], quick=True)
    _, _, full = make_plan(device_request="cpu", model_names=["speech_cnn"], quick=False)
    assert any("compile.declared:verdicts" in s.label for s in quick)
    assert not any("cpu-compile" in s.label for s in quick)
    compiled = [s.label for s in full if "setup=cpu-compile" in s.label]
    assert compiled[:2] == ["timing speech_cnn/train/setup=cpu-compile (process 1 of 4)",
                            "timing speech_cnn/eval/setup=cpu-compile (process 1 of 4)"]
    assert len(compiled) == 2 * 4  # each in every one of the four fresh processes


def test_the_plan_estimates_compiles_as_docs_compile_md_measured_them():
    """docs/compile.md, 2 cores: the run checks the CPU's vector instructions once (12 s, before its
    first timing); then a process's first inductor compile 10 to 13 s cold, 8 to 10 s warm, later cold
    ones 2.0 to 7.2 s a model, later warm ones 0.3 s a figure."""
    from suite.runner import VEC_ISA_PROBE_S, make_plan, sampling_estimate_s
    from suite.timing.processes import INTERPRETER_START_S

    _, _, full = make_plan(device_request="cpu", model_names=["speech_cnn"], quick=False)
    processes: dict[str, list] = {}
    for step in full:
        found = re.search(r"\(process (\d+) of \d+\)$", step.label)
        if step.kind == "timing" and found:
            processes.setdefault(found.group(1), []).append(step)
    assert len(processes) == 4
    first_timing = processes["1"][0]
    assert first_timing.estimate_s == sampling_estimate_s(False) + INTERPRETER_START_S + VEC_ISA_PROBE_S
    for number, steps in processes.items():
        compiles = [s.estimate_s - sampling_estimate_s(False) - (INTERPRETER_START_S if i == 0 else 0.0)
                    for i, s in enumerate(steps) if "setup=cpu-compile" in s.label]
        first, *later = compiles
        cold = number == "1"
        assert (10.0 <= first <= 13.0) if cold else (8.0 <= first <= 10.0), (number, compiles)
        assert later and all((2.0 <= s <= 7.2) if cold else s <= 1.0 for s in later), (number, compiles)


# -- the optimizer step, torch.export, the suite's own backends by name -----------------------------

def test_the_export_check_compares_the_exported_program_not_the_eager_module(monkeypatch):
    import suite.conformance.compile.check as check

    x, y = torch.randn(8, 8), torch.randint(0, 4, (8,))
    report = check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, backend="export")
    assert report.passed and "exported once" in report.summary(), report
    exported = check._exported

    def off(module, example):  # the exported module, its outputs off by 1e-3
        program = exported(module, example)
        return lambda inputs: program(inputs) * 1.001

    monkeypatch.setattr(check, "_exported", off)
    wrong = check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, backend="export")
    assert wrong.verdict == "fail" and {"outputs", "gradients"} <= set(wrong.failures()), wrong


def test_the_suites_own_wrong_backend_is_found_by_name_and_caught():
    from suite.conformance.compile.backends import OFF_BY_A_THOUSANDTH

    x, y = torch.randn(8, 8), torch.randint(0, 4, (8,))
    report = check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, backend=OFF_BY_A_THOUSANDTH, steps=2)
    assert report.verdict == "fail" and "outputs" in report.failures() and report.backend == OFF_BY_A_THOUSANDTH


def test_compile_parts_are_checked_before_anything_runs():
    x, y = torch.randn(8, 8), torch.randint(0, 4, (8,))
    with pytest.raises(ValueError, match="compile_parts is one of"):
        check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, compile_parts="scheduler")
    with pytest.raises(ValueError, match="no optimizer step to compile"):
        check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, compile_parts="optimizer", mode="eval")
    with pytest.raises(ValueError, match="torch.export exports the model"):
        check_compile(tiny_mlp, x, y, loss_fn=F.cross_entropy, backend="export", compile_parts="both")


# -- inductor's vector-ISA check, once a run (suite.vec_isa) ----------------------------------------

@pytest.mark.parametrize("answers, shared", [((True, True), True), ((True, False), False)], ids=["all pass", "one fails"])
def test_the_vector_isa_check_is_shared_with_children_only_when_every_set_passed(monkeypatch, answers, shared,
                                                                                 vec_isa_check_done):
    import platform

    import torch._inductor.cpu_vec_isa as cpu_vec_isa

    from suite import vec_isa

    class FakeIsa:
        def __init__(self, name, passes):
            self.name, self.passes = name, passes

        def __str__(self):
            return self.name

        def __bool__(self):
            return self.passes

    monkeypatch.delenv(vec_isa.VEC_ISA_ENV, raising=False)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_vec_isa, "x86_isa_checker", lambda: ["avx2", "avx512"])
    monkeypatch.setattr(cpu_vec_isa, "supported_vec_isa_list",
                        [FakeIsa("avx512", answers[0]), FakeIsa("avx2", answers[1]), FakeIsa("amx_tile", True)])
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", lambda: [])
    assert vec_isa.share_vec_isa_probe() is shared
    assert os.environ.get(vec_isa.VEC_ISA_ENV) == ("1" if shared else None)
    monkeypatch.setenv(vec_isa.VEC_ISA_ENV, "0")  # set by the user: left alone, and children check
    assert vec_isa.share_vec_isa_probe() is False and os.environ[vec_isa.VEC_ISA_ENV] == "0"

    def broken():
        raise RuntimeError("no C++ compiler")

    monkeypatch.delenv(vec_isa.VEC_ISA_ENV)
    monkeypatch.setattr(cpu_vec_isa, "x86_isa_checker", broken)
    assert vec_isa.share_vec_isa_probe() is False  # the compile that follows says what is wrong


def test_the_vector_isa_check_starts_on_a_thread_and_its_waiter_waits_for_it(monkeypatch):
    import threading

    from suite import vec_isa

    started, release, ended = threading.Event(), threading.Event(), []

    def slow_check():
        started.set()
        release.wait(10)
        ended.append(True)

    monkeypatch.setattr(vec_isa, "share_vec_isa_probe", slow_check)
    wait = vec_isa.start_vec_isa_probe()
    assert started.wait(10) and not ended  # it runs, and starting it did not wait for it
    release.set()
    wait()
    assert ended
