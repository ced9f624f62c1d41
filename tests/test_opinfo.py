"""check_ops over OpInfo's op_db: a wrong kernel is caught by name, declarations are honoured,
a crash is a verdict, bad input is one line, and the report shows what differs between machines.

The default run checks a few ops on one or two samples (op_db's import, about 3 s, is most of
it); the sweeps over all of op_db are `slow`.
"""
import contextlib
import json
import math
import sys
import unittest
import warnings

import pytest
import torch

pytest.importorskip("expecttest")
pytest.importorskip("hypothesis")

from suite import results  # noqa: E402
from suite.cases import opinfo  # noqa: E402
from suite.cases.expect import fails  # noqa: E402
from suite.conformance.ops.__main__ import main as ops_main  # noqa: E402
from suite.conformance.ops.check import check_ops  # noqa: E402
from suite.conformance.ops.compare import compare  # noqa: E402
from suite.conformance.ops.verdicts import record  # noqa: E402
from suite.errors import SuiteError  # noqa: E402
from suite.report import build_report  # noqa: E402

SMALL = ["add", "mul", "sin", "nn.functional.gelu", "sum", "matmul", "bernoulli"]


@pytest.fixture
def wrong_neg():
    """aten::neg on the CPU made wrong (or raising) for bfloat16 only, for the test's duration.
    The other dtypes get the right answer from aten::mul, which is exact for -1."""
    def install(kind: str = "wrong"):
        def neg(x):
            if x.dtype == torch.bfloat16:
                if kind == "raise":
                    raise RuntimeError("a bfloat16 kernel that raises on purpose")
                if kind == "oom":
                    raise torch.OutOfMemoryError("planted: out of memory")
                if kind == "small":  # wrong by 10 % on the elements under a tenth of the largest only
                    small = x.abs() < 0.1 * x.abs().max()
                    return torch.where(small, x * -1.1, x * -1)
                return x * -1.0625  # wrong by 6 %: far beyond bfloat16's rounding
            return x * -1

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            library.impl("neg", neg, "CPU")

    library = torch.library.Library("aten", "IMPL")
    yield install
    library._destroy()


def test_importing_op_db_leaves_the_backend_flags_and_torchscript_alone():
    calls = torch._C.ScriptFunction.__call__
    frozen = torch.backends.flags_frozen()
    assert len(opinfo.op_db()) > 500
    assert torch.backends.flags_frozen() == frozen
    assert torch._C.ScriptFunction.__call__ is calls


def test_the_suites_seeding_draws_what_torch_manual_seed_draws():
    """The op sweep seeds through suite.devices.manual_seed, and OpInfo's samples through the
    suite's set_rng_seed: the same numbers as torch's own seeding, from every generator it seeds."""
    import random

    import numpy

    from suite.devices import manual_seed

    opinfo.op_db()
    from torch.testing._internal import common_utils

    def draws():
        return torch.randn(4).tolist(), random.random(), float(numpy.random.rand())

    torch.manual_seed(1234)
    random.seed(1234)
    numpy.random.seed(1234)
    expected = draws()
    common_utils.set_rng_seed(1234)
    assert draws() == expected
    torch.manual_seed(77)
    want = torch.randn(4).tolist()
    manual_seed(77)
    assert torch.randn(4).tolist() == want


def test_a_kernel_wrong_in_one_dtype_is_caught_by_name(wrong_neg):
    wrong_neg()
    report = check_ops(["neg"], dtypes=["float32", "bfloat16"], samples=2)
    assert report.verdict("neg", "forward", "bfloat16").outcome == "fail"
    assert report.verdict("neg", "forward", "float32").outcome == "pass"
    assert {(v.case, v.check, v.dtype) for v in report.failures()} >= {("neg", "forward", "bfloat16")}
    assert all(v.dtype == "bfloat16" for v in report.failures())
    assert "NOT AS DECLARED neg forward bfloat16: fail" in str(report)


def test_a_kernel_wrong_only_on_small_elements_is_caught_where_the_output_scale_would_hide_it(wrong_neg,
                                                                                             monkeypatch):
    wrong_neg("small")
    verdict = check_ops(["neg"], dtypes=["bfloat16"], checks=["forward"], samples=2).verdicts[0]
    assert verdict.outcome == "fail" and verdict.error > 3, verdict.detail
    monkeypatch.setattr(opinfo.OpCase, "scaled", lambda *_: True)  # the rule before each element had its own
    hidden = check_ops(["neg"], dtypes=["bfloat16"], checks=["forward"], samples=2).verdicts[0]
    assert hidden.outcome == "pass" and hidden.element_error == verdict.error, hidden.detail
    assert "against each element's own tolerance" in hidden.detail


def test_the_same_op_without_a_wrong_kernel_passes():
    report = check_ops(["neg"], dtypes=["float32", "bfloat16"], samples=2)
    assert report.passed, report


def test_a_small_sweep_has_no_verdict_outside_the_declarations():
    report = check_ops(SMALL, dtypes=["float32", "bfloat16"], samples=1)
    assert report.passed, report
    assert report.counts()["pass"] > 0
    skipped = report.verdict("bernoulli", "forward", "float32")  # OpInfo: its output is random
    assert skipped.outcome == "skip" and "OpInfo skips TestCommon.test_compare_cpu" in skipped.detail


def test_a_crash_is_a_verdict_not_an_exception(wrong_neg):
    wrong_neg("raise")
    verdict = check_ops(["neg"], dtypes=["bfloat16"], checks=["forward"], samples=1).verdicts[0]
    assert (verdict.outcome, verdict.passed) == ("crash", False)
    assert "raised RuntimeError: a bfloat16 kernel that raises on purpose" in verdict.detail
    assert "Tensor[size=" in verdict.sample


def test_a_declared_failure_that_passes_is_an_unexpected_pass(monkeypatch, wrong_neg):
    declared = (opinfo.SuiteDeclaration(fails("forward", why="declared in a test"), dtypes=(torch.bfloat16,)),)
    monkeypatch.setitem(opinfo.SUITE_DECLARATIONS, "neg", declared)
    verdict = check_ops(["neg"], dtypes=["bfloat16"], checks=["forward"]).verdicts[0]
    assert (verdict.outcome, verdict.expected, verdict.passed) == ("unexpected_pass", "fails", False)
    # on its first sample only, the declared failure may be on another: reported, not judged stale
    verdict = check_ops(["neg"], dtypes=["bfloat16"], checks=["forward"], samples=1).verdicts[0]
    assert (verdict.outcome, verdict.passed) == ("unexpected_pass", True) and "some of its samples" in verdict.detail
    wrong_neg()
    verdict = check_ops(["neg"], dtypes=["bfloat16"], checks=["forward"], samples=1).verdicts[0]
    assert (verdict.outcome, verdict.passed) == ("expected_failure", True)
    assert "declared in a test" in verdict.detail


def test_opinfo_skips_and_expected_failures_become_expectations():
    jiterator = opinfo.cases("jiterator_unary")[0]  # OpInfo runs it on CUDA only
    assert jiterator.expect("forward", "cpu", torch.float32).outcome == "not_applicable"
    # expected failures of gradcheck (float64 finite differences) do not speak for a low-precision vjp
    scatter = opinfo.cases("as_strided_scatter")[0]
    assert any("test_fn_grad" in (d.test_name or "") and unittest.expectedFailure in d.decorators
               for d in scatter.info.decorators if hasattr(d, "is_active"))
    assert scatter.expect("backward", "cpu", torch.float32) is None


def test_each_element_is_judged_by_its_own_tolerance_unless_scaled_and_nan_meets_only_nan():
    reference = torch.tensor([1000.0, 1e-3, float("nan"), float("inf")], dtype=torch.float64)
    near = reference.clone()
    near[1] += 5e-4  # cancellation-sized error on a small element of a large output
    judged = compare(near.float(), reference, 1.3e-6, 1e-5)
    assert not judged.passed and "at [1]" in judged.detail and judged.element_error == judged.error
    scaled = compare(near.float(), reference, 1.3e-6, 1e-5, scaled=True)
    assert scaled.passed and scaled.element_error == judged.error
    wrong = reference.clone()
    wrong[2] = 0.0
    assert not compare(wrong, reference, 1.3e-6, 1e-5).passed
    assert not compare(torch.tensor([1, 2]), torch.tensor([1, 3]), 0.1, 0.1).passed


@pytest.mark.parametrize("argv", [["--ops", "no_such_op"], ["--dtypes", "float128"], ["--checks", "sideways"]])
def test_bad_input_is_one_line_and_a_nonzero_exit(argv, capsys):
    assert ops_main(argv + ["--samples", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("check_ops: error:") and "\n" not in err


def test_an_unknown_op_suggests_close_names():
    with pytest.raises(SuiteError, match=r"unknown OpInfo op 'matmull' \(did you mean matmul"):
        check_ops(["matmull"])


def _results_file(path, machine: str, records: list[dict]):
    data = {"format": results.FORMAT, "schema_version": results.SCHEMA_VERSION, "status": "complete",
            "machine": {"name": machine}, "run": {}, "peaks": [],
            "records": [{"kind": "conformance", **r} for r in records]}
    path.write_text(json.dumps(data))
    return path


def test_the_report_of_two_machines_lists_the_ops_whose_verdicts_differ(tmp_path, wrong_neg, tables_only):
    good = [record(v, "cpu") for v in check_ops(["neg", "abs"], dtypes=["bfloat16"], samples=1).verdicts]
    wrong_neg()
    bad = [record(v, "cpu") for v in check_ops(["neg", "abs"], dtypes=["bfloat16"], samples=1).verdicts]
    files = [_results_file(tmp_path / "a.json", "alpha", good), _results_file(tmp_path / "b.json", "beta", bad)]
    written = build_report(files, out_dir=tmp_path / "report")
    text = next(p for p in written if p.suffix == ".md").read_text()
    differ = text.split("## Ops whose verdicts differ between machines")[1].split("## ")[0]
    assert "| neg " in differ and "forward bfloat16" in differ and "fail" in differ
    assert "| abs " not in differ
    assert "## Ops (OpInfo): outcomes per device and dtype" in text
    assert "## Ops not as declared" in text


def test_an_op_out_of_memory_is_a_verdict_of_its_own_and_the_next_op_goes_on(wrong_neg):
    wrong_neg("oom")
    report = check_ops(["neg", "abs"], dtypes=["bfloat16", "float32"], checks=["forward"], samples=1)
    outcomes = {(v.case, v.dtype): v.outcome for v in report.verdicts}
    assert outcomes == {("neg", "bfloat16"): "out_of_memory", ("neg", "float32"): "pass",
                        ("abs", "bfloat16"): "pass", ("abs", "float32"): "pass"}
    assert not report.passed and "OutOfMemoryError" in report.verdict("neg", "forward", "bfloat16").detail


@contextlib.contextmanager
def planted(kernels: dict):
    """aten's CPU kernels replaced by {op name: function} for the block's duration."""
    library = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            for name, kernel in kernels.items():
                library.impl(name, kernel, "CPU")
        yield
    finally:
        library._destroy()


def test_a_kernel_that_ignores_its_inputs_strides_fails_on_the_non_contiguous_copy():
    def exp(x):  # reads the input's memory as if it were contiguous, as a kernel with a stride bug does
        flat = x.as_strided((x.numel(),), (1,), x.storage_offset())
        return (torch.special.expm1(flat) + 1).reshape(x.shape)

    with planted({"exp": exp}):
        report = check_ops(["exp", "neg"], dtypes=["float32"], checks=["forward"])
    bad = report.verdict("exp", "forward", "float32")
    assert bad.outcome == "fail" and bad.sample.startswith("non-contiguous: SampleInput(") and \
        "on the sample's non-contiguous copy" in bad.detail, bad
    assert report.verdict("neg", "forward", "float32").outcome == "pass"


def test_a_kernel_wrong_only_on_channels_last_input_fails_on_the_channels_last_copy():
    def pixel_shuffle(x, r):  # right through views, and 1 % off for a float32 image in channels_last
        *lead, c, h, w = x.shape
        n = len(lead)
        out = x.reshape(*lead, c // (r * r), r, r, h, w).permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
        out = out.reshape(*lead, c // (r * r), h * r, w * r).contiguous()
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return out * 1.01 if channels_last and x.dtype == torch.float32 else out

    with planted({"pixel_shuffle": pixel_shuffle}):
        report = check_ops(["nn.functional.pixel_shuffle"], dtypes=["float32", "bfloat16"], checks=["forward"],
                           samples=2)
    bad = report.verdict("nn.functional.pixel_shuffle", "forward", "float32")
    assert bad.outcome == "fail" and bad.sample.startswith("channels-last: SampleInput(") and \
        "on the sample's channels-last copy" in bad.detail, bad
    assert report.verdict("nn.functional.pixel_shuffle", "forward", "bfloat16").outcome == "pass"


@pytest.fixture
def planted_forms():
    """aten::exp_ (in-place) and aten::neg.out wrong in float32 only; exp, neg and the other
    forms untouched. Each form is its own kernel on the CPU."""
    def exp_(x):
        return x.copy_(torch.exp(x) * (1.001 if x.dtype == torch.float32 else 1.0))

    def neg_out(x, *, out):
        return out.copy_(torch.neg(x) * (1.01 if x.dtype == torch.float32 else 1.0))

    with planted({"exp_": exp_, "neg.out": neg_out}):
        yield


def test_a_kernel_wrong_only_in_its_in_place_or_out_form_is_caught_by_op_form_and_dtype(planted_forms):
    report = check_ops(["exp", "neg"], dtypes=["float32", "bfloat16"], checks=["forward", "method", "inplace", "out"])
    failed = {(v.case, v.check, v.dtype) for v in report.failures()}
    assert failed == {("exp", "inplace", "float32"), ("neg", "out", "float32")}, report
    assert {(v.case, v.check) for v in report.verdicts} == {
        (op, check) for op in ("exp", "neg") for check in ("forward", "method", "inplace", "out")}
    assert all(v.outcome == "pass" for v in report.verdicts if (v.case, v.check, v.dtype) not in failed)


def test_an_in_place_form_is_not_given_a_sample_whose_result_its_input_cannot_hold():
    report = check_ops(["add"], dtypes=["float32"], checks=["inplace"])  # some samples broadcast the input
    assert report.passed and report.verdicts[0].outcome == "pass", report
    assert not opinfo.cases(["sum"])[0].has("inplace") and opinfo.cases(["sum"])[0].has("method")


def test_ops_whose_meaning_is_their_strides_are_checked_contiguous_only():
    as_strided = opinfo.cases(["as_strided"])[0]  # and its partial_views variant
    assert not as_strided.strided("cpu", torch.float32) and opinfo.cases(["exp"])[0].strided("cpu", torch.float32)


def test_verdict_records_are_plain_json():
    verdict = check_ops(["sin"], dtypes=["float32"], checks=["forward"], samples=1).verdicts[0]
    rec = record(verdict, "cpu")
    assert json.loads(json.dumps(rec)) == rec
    assert (rec["suite"], rec["case"], rec["check"], rec["dtype"], rec["outcome"]) == \
        ("ops", "sin", "forward float32", "float32", "pass")
    assert math.isfinite(rec["error"])


@pytest.mark.slow
def test_the_quick_sweep_of_all_of_op_db_is_as_declared():
    report = check_ops(dtypes=["float32", "bfloat16"], samples=1)
    assert len({v.case for v in report.verdicts}) > 600
    assert report.passed, report


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_full_cpu_sweep_of_op_db_is_as_declared():  # every dtype, sample and form: about 2 minutes
    report = check_ops()
    assert report.passed, report
    # every op judged at its output's scale (opinfo.SCALED) needs it: it fails each element's own tolerance
    stale = [str(v) for v in report.verdicts if v.check in ("forward", "backward") and v.outcome == "pass"
             and "output's largest" in v.tolerance and v.element_error <= 1]
    assert not stale, stale


# Its worker imports torch and op_db, 4 s: launched when collection ends (tests/conftest.py).
@pytest.mark.launch([sys.executable, "-m", "suite", "ops", "--ops", "neg", "--dtypes", "float32", "--samples", "1"])
def test_torchsuite_ops_is_the_same_command(launched, capsys):
    from suite.cli import main

    returncode, output = launched.wait(timeout=240)
    assert returncode == 0, output
    assert "1 ops, 5 verdicts: 5 pass" in output  # forward, backward, method, inplace, out
    assert main(["ops", "--ops", "nosuchop"]) == 2
    assert "unknown OpInfo op 'nosuchop'" in capsys.readouterr().err
