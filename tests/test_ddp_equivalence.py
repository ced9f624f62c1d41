"""DDP and FSDP2 equal one process on the whole batch: every declared parallel case reaches its verdict.

The cases come from suite.cases.parallel; the process groups are the shared pools (one per
world size), so the whole file starts each group once. FSDP2 cases beyond 2 ranks are `slow`
(the default run keeps each FSDP configuration at 2 ranks).
"""

import pytest
import torch

from suite.cases.expect import describe
from suite.cases.parallel import CASES, adam, cross_entropy_sum, tiny_mlp
from suite.conformance.parallel.equivalence import (SUM_LOSS, check_case, check_ddp_equivalence, judge,
                                   verdicts)
from suite.devices import cuda_count, missing_reason
from suite.distributed import get_pool
from suite.errors import DeviceUnavailableError


def _marks(case):
    marks = [pytest.mark.slow] if case.slow or (case.wrapper == "fsdp" and case.world_size > 2) else []
    if case.devices_needed >= 2:
        return marks + [pytest.mark.multigpu]
    return marks + ([pytest.mark.gpu] if case.devices_needed == 1 else [])


CPU_CASES = [c for c in CASES if not c.devices_needed]


@pytest.mark.distributed
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_marks(c)) for c in CASES])
def test_case_reaches_its_expected_verdict(case):
    report = check_case(case, device="cuda" if case.devices_needed else "cpu")
    passed, detail = judge(case, report)
    assert passed, detail


# -- the checker's own behaviour ---------------------------------------------------------------

def _batch(size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 8, generator=generator), torch.randint(0, 4, (size,), generator=generator)


@pytest.mark.distributed
def test_ranks_drawing_their_own_weights_still_match_a_reference_from_rank_0s():
    # tiny_mlp draws fresh weights on every call and every rank is seeded differently: only
    # DDP's broadcast of rank 0's state, which the reference copies, can make them agree.
    report = check_ddp_equivalence(tiny_mlp, *_batch(), loss_fn=torch.nn.functional.cross_entropy)
    assert report.passed, report.detail
    assert (report.backend, report.world_size, report.steps, report.divergence) == ("gloo", 2, 3, None)
    assert (report.rtol, report.atol) == (1.3e-6, 1e-5)
    assert set(report.max_abs_diff) == {"gradient", "parameter"}
    assert report.detail.startswith("equivalent: 3 steps on 2 ranks (gloo, cpu)")


@pytest.mark.distributed
def test_compiled_ddp_really_compiles_and_splits_its_graph_at_the_buckets():
    one_bucket = check_case(CASES.get("mlp_compiled_ddp_w2"))
    buckets = check_case(CASES.get("mlp_compiled_ddp_buckets_w2"))
    assert one_bucket.passed and buckets.passed, (one_bucket.detail, buckets.detail)
    assert one_bucket.compiled_graphs == 1  # a small model: one bucket, one graph
    assert buckets.compiled_graphs >= 2  # DDPOptimizer: a graph per bucket, so all-reduces overlap backward
    assert check_case(CASES.get("mlp_sgd_momentum_w2")).compiled_graphs is None


@pytest.mark.distributed
def test_a_sum_loss_diverges_at_step_1_by_exactly_the_world_size_and_rescaling_fixes_it():
    inputs, targets = _batch(6)
    report = check_ddp_equivalence(tiny_mlp, inputs, targets, loss_fn=cross_entropy_sum,
                                   optimizer_fn=adam, world_size=3)
    assert not report.passed and report.reason == SUM_LOSS
    assert (report.divergence.step, report.divergence.category, report.divergence.tensor) == (1, "gradient", "0.weight")
    assert report.divergence.max_abs_diff > 100 * report.atol
    assert "exactly 1/3 of the reference's" in report.detail and "\n" not in report.detail
    rescaled = check_ddp_equivalence(tiny_mlp, inputs, targets, loss_fn=cross_entropy_sum,
                                     optimizer_fn=adam, world_size=3, loss_scale=3)
    assert rescaled.passed, rescaled.detail


def test_a_batch_that_does_not_split_into_equal_shards_is_an_error():
    with pytest.raises(ValueError, match="a global batch of 7 does not split into 2 equal shards"):
        check_ddp_equivalence(tiny_mlp, *_batch(7), loss_fn=torch.nn.functional.cross_entropy)


def test_an_absent_device_is_an_error_naming_it():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path needs a machine without it")
    with pytest.raises(DeviceUnavailableError, match="device 'cuda' requested but unavailable"):
        check_ddp_equivalence(tiny_mlp, *_batch(), loss_fn=torch.nn.functional.cross_entropy,
                              device="cuda")


# -- the registry ------------------------------------------------------------------------------

def test_the_matrix_covers_every_required_configuration():
    assert len(CASES) >= 30 and {c.world_size for c in CPU_CASES} == {2, 3, 4}
    options = {key for c in CASES for key in c.ddp_kwargs}
    assert {"gradient_as_bucket_view", "static_graph", "bucket_cap_mb", "find_unused_parameters",
            "broadcast_buffers"} <= options
    assert {c.scheme for c in CASES} == {"shards", "uneven", "sampler"}
    assert any(c.accumulate > 1 for c in CASES) and any(c.rescale_loss for c in CASES)
    assert {e.cause for c in CASES for e in c.expect if e.outcome == "fails"} == {
        "sum_loss", "batchnorm", "dropout", "compression", "mixed_precision", "sharding", "compiler"}
    fsdp = [c for c in CASES if c.wrapper == "fsdp"]
    assert {c.world_size for c in fsdp} == {2, 3, 4} and any(c.accumulate > 1 for c in fsdp)
    assert {False, 2} <= {c.fsdp_kwargs.get("reshard_after_forward") for c in fsdp}
    assert {"mnist_cnn", "cifar10_lenet", "speech_cnn"} <= {c.family.removeprefix("fsdp_") for c in fsdp}
    assert {"allreduce", "fp16_compress", "bf16_compress", "powersgd"} == {c.comm_hook for c in CASES} - {""}
    assert {"mnist_cnn", "cifar10_lenet", "speech_cnn"} <= {c.family for c in CASES}
    assert {"SGD", "Adam"} <= {type(c.optimizer(tiny_mlp().parameters())).__name__ for c in CASES}
    assert {"aot_eager", "torchsuite_off_by_a_thousandth"} <= {c.compile_backend for c in fsdp}
    assert any(c.quick for c in CASES) and all(c.world_size == 2 for c in CASES if c.quick)


def test_every_declared_cause_is_one_the_checker_diagnoses():
    from suite.cases.parallel import DIVERGENCE_CAUSES
    from suite.conformance.parallel.equivalence import _CAUSES

    assert set(DIVERGENCE_CAUSES) <= set(_CAUSES) - {"unexplained"}


def test_every_case_describes_itself_in_one_line():
    for case in CASES:
        text = case.describe()
        assert text and "\n" not in text and text.endswith(describe(case.expect))


# -- torchsuite run and torchrun ---------------------------------------------------------------

@pytest.mark.distributed
def test_quick_verdicts_are_records_of_world_size_2_cases_that_pass():
    records = list(verdicts("cpu", quick=True))
    assert 3 <= len(records) <= 8
    assert {r["case"] for r in records} <= {c.name for c in CASES if c.world_size == 2}
    assert {r["suite"] for r in records} == {"ddp", "fsdp"}
    for r in records:
        assert (r["kind"], r["check"], r["device"]) == ("conformance", "equivalence", "cpu")
        assert r["passed"] is True, r["detail"]
        assert r["seconds"] > 0


def test_torchrun_runs_one_case_per_configuration_preferring_the_launched_world_size():
    from suite.distributed.__main__ import select_cases

    # By hand from suite/cases/parallel.py: mnist_cnn is declared at 2 and 3 ranks, fsdp_mlp at 2,
    # 3 and 4, fsdp_mlp_reshard_to_2 (reshard_after_forward=2) at 2 and 4, mlp_allreduce_hook at 2
    # only, mlp_sync_batchnorm at 2 on two GPUs. Each family runs its variant declared at the
    # launched size, else its first (w2); reshard to 2 only where 2 divides the size; never a GPU
    # case on the CPU. None: not run.
    expected = {
        2: {"mnist_cnn": "mnist_cnn_w2", "fsdp_mlp": "fsdp_mlp_w2", "fsdp_mlp_reshard_to_2": "fsdp_mlp_reshard_to_2_w2",
            "mlp_allreduce_hook": "mlp_allreduce_hook_w2", "mlp_sync_batchnorm": None},
        3: {"mnist_cnn": "mnist_cnn_w3", "fsdp_mlp": "fsdp_mlp_w3", "fsdp_mlp_reshard_to_2": None,
            "mlp_allreduce_hook": "mlp_allreduce_hook_w2", "mlp_sync_batchnorm": None},
        4: {"mnist_cnn": "mnist_cnn_w2", "fsdp_mlp": "fsdp_mlp_w4", "fsdp_mlp_reshard_to_2": "fsdp_mlp_reshard_to_2_w4",
            "mlp_allreduce_hook": "mlp_allreduce_hook_w2", "mlp_sync_batchnorm": None},
        16: {"mnist_cnn": "mnist_cnn_w2", "fsdp_mlp": "fsdp_mlp_w2", "fsdp_mlp_reshard_to_2": "fsdp_mlp_reshard_to_2_w2",
             "mlp_allreduce_hook": "mlp_allreduce_hook_w2", "mlp_sync_batchnorm": None},
    }
    chosen = {n: select_cases(None, n, "cpu") for n in expected}
    for n, families in expected.items():
        by_family = {c.family: c.name for c in chosen[n]}
        assert len(by_family) == len(chosen[n])  # each family once
        assert {family: by_family.get(family) for family in families} == families, n
    assert all(c.world_size == 2 for c in chosen[2])
    # every family runs at 2, 4 and 16 ranks; at 3 all but the one that reshards to 2
    assert len(chosen[2]) == len(chosen[4]) == len(chosen[16]) == len(chosen[3]) + 1
    assert "mlp_sync_batchnorm_w2" in {c.name for c in select_cases(None, 2, "cuda")}


@pytest.mark.distributed
def test_the_torchrun_entry_reports_a_verdict_that_is_not_the_expected_one():
    from suite.distributed.__main__ import verdict_lines

    # On one rank there is nothing to average: the sum loss that must diverge does not.
    lines = get_pool(1).run(verdict_lines, "mlp_sum_loss_w2", "cpu", "gloo")[0]
    assert [(ok, line.split(":")[0]) for ok, line in lines] == [(False, "FAIL mlp_sum_loss_w2 (world size 1)")]
    assert "NOT as expected to diverge from sum_loss: equivalent" in lines[0][1]


# -- GPUs --------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.distributed
@pytest.mark.parametrize("case", [c for c in CPU_CASES if c.world_size == 2 and c.quick], ids=lambda c: c.name)
def test_gloo_over_cuda_tensors_on_one_gpu(case):
    passed, detail = judge(case, check_case(case, device="cuda", backend="gloo"))
    assert passed, detail


@pytest.mark.multigpu
@pytest.mark.distributed
@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: c.name)
def test_nccl_with_one_process_per_gpu(case):
    if cuda_count() < case.world_size:
        pytest.skip(missing_reason("cuda", case.world_size))
    passed, detail = judge(case, check_case(case, device="cuda", backend="nccl"))
    assert passed, detail


# -- FSDP2 -----------------------------------------------------------------------------------

def test_tied_weights_are_sharded_with_their_common_parent_and_the_rest_alone():
    from suite.cases.parallel import TiedMlp, uneven_mlp
    from suite.conformance.parallel.fsdp import shard_groups

    model = TiedMlp()
    groups = shard_groups(model)
    assert groups == [model.inp, model.out] or groups == [model.out, model.inp]  # first/second: the root's
    nested = torch.nn.Sequential(uneven_mlp(), TiedMlp())
    groups = shard_groups(nested)
    assert nested[1] in groups and nested[1].first not in groups and nested[1].second not in groups
    assert nested[0][0] in groups and groups.index(nested[0][0]) < groups.index(nested[1])  # deepest first


def test_a_weight_the_parent_uses_by_hand_is_found_by_running_the_model_and_sharded_with_the_parent():
    from suite.cases.parallel import HandTiedMlp, TiedMlp
    from suite.conformance.parallel.fsdp import parameter_users, plan_sharding

    model, example = HandTiedMlp(), torch.randn(2, 8)
    assert parameter_users(model)["proj.weight"] == {"proj"}  # the structure alone cannot see it
    users = parameter_users(model, example)
    assert users["proj.weight"] == {"proj", ""} and users["proj.bias"] == {"proj"} and users["down.weight"] == {"down"}
    assert plan_sharding(model, example).groups == ("down",)  # proj goes with the root
    assert plan_sharding(TiedMlp(), example).groups == ("inp", "out")  # the shared object, as before
    nested = torch.nn.Sequential(HandTiedMlp())  # the user is a submodule, not the root
    assert parameter_users(nested, example)["0.proj.weight"] == {"0.proj", "0"}
    assert plan_sharding(nested, example).groups == ("0.down", "0")


def test_a_sharding_that_leaves_a_used_weight_away_from_its_user_is_refused_naming_it_and_the_fix():
    from suite.cases.parallel import HandTiedMlp, TiedMlp
    from suite.conformance.parallel.fsdp import plan_sharding

    model, example = HandTiedMlp(), torch.randn(2, 8)
    problem = plan_sharding(model, example, ("down", "proj")).problem
    assert problem.startswith("proj.weight is sharded with 'proj' but used outside it, by the root")
    assert "leave 'proj' out of shard_modules, so that the root, their common ancestor, holds it" in problem
    assert plan_sharding(model, example, ("down",)) == plan_sharding(model, example)
    assert "second.weight" in plan_sharding(TiedMlp(), example, ("first", "second")).problem or \
        "first.weight" in plan_sharding(TiedMlp(), example, ("first", "second")).problem
    assert "names no submodule 'nope'" in plan_sharding(model, example, ("nope",)).problem


class OutsideUseOnLargeBatches(torch.nn.Module):
    """Uses proj.weight from the root only on batches above 2: the probe's 2 samples miss it."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, x):
        out = self.proj(x)
        return out + (x @ self.proj.weight.t() if len(x) > 2 else 0)


@pytest.mark.distributed
def test_a_use_the_probe_did_not_see_is_a_failing_verdict_not_a_worker_exception():
    from suite.conformance.parallel.equivalence import SHARDING, check_fsdp_equivalence

    report = check_fsdp_equivalence(OutsideUseOnLargeBatches, *_batch(size=8), loss_fn=torch.nn.functional.cross_entropy)
    assert report.verdict == "fail" and report.reason == SHARDING and report.divergence is None
    assert "mixed torch.Tensor and DTensor" in report.detail and "shard_modules" in report.detail


@pytest.mark.distributed
def test_fsdp_with_ranks_that_built_different_weights_equals_one_process():
    from suite.conformance.parallel.equivalence import check_fsdp_equivalence

    # tiny_mlp draws fresh weights on each rank (seeded by rank): fully_shard does not broadcast,
    # so only a reference built from the shards' full tensors can agree with what FSDP trains.
    report = check_fsdp_equivalence(tiny_mlp, *_batch(), loss_fn=torch.nn.functional.cross_entropy)
    assert report.passed, report.detail
    assert set(report.max_abs_diff) == {"gradient", "parameter"} and report.max_abs_diff["gradient"] < 1e-5


@pytest.mark.distributed
def test_fsdp_names_the_step_and_tensor_of_a_sum_loss():
    from suite.conformance.parallel.equivalence import check_fsdp_equivalence

    report = check_fsdp_equivalence(tiny_mlp, *_batch(), loss_fn=cross_entropy_sum)
    assert not report.passed and report.reason == SUM_LOSS
    assert (report.divergence.step, report.divergence.category) == (1, "gradient")


def test_full_verdicts_run_one_world_size_at_a_time_and_close_its_pools_before_the_next(monkeypatch):
    import suite.conformance.parallel.equivalence as equivalence
    import suite.distributed.pool as pool

    events = []
    monkeypatch.setattr(pool, "close_shared_pools", lambda: events.append("close"))
    monkeypatch.setattr(equivalence, "check_case", lambda case, **kw: events.append(case.world_size))
    monkeypatch.setattr(equivalence, "judge", lambda case, report: (True, ""))
    records = list(verdicts("cpu", quick=False))
    sizes = [e for e in events if e != "close"]
    assert sizes == sorted(sizes) and set(sizes) == {c.world_size for c in CPU_CASES}
    assert len(records) == len(CPU_CASES)
    closes = [i for i, e in enumerate(events) if e == "close"]
    assert len(closes) == len(set(sizes)) - 1  # once per change of size, and only there
    assert all(0 < i < len(events) - 1 and events[i - 1] < events[i + 1] for i in closes)


# -- what the report says: tolerances used, causes named, nothing compiled ----------------------

def _token_job_record():
    """One rank's comparison, in process, of a model fed token ids (integers): what a worker sends."""
    import copy

    from suite.conformance.parallel.ddp_training import TrainingJob, compare, local_tensors

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(12, 3))
    reference = copy.deepcopy(model)
    tokens = torch.randint(0, 10, (2, 3))
    for m in (model, reference):
        m(tokens).sum().backward()
    job = TrainingJob(model_fn=None, loss_fn=None, optimizer_fn=None, inputs=(tokens,), targets=(tokens,), steps=1)
    return {"step": 1, "what": "every tensor", **compare(local_tensors(model), local_tensors(reference), 1, True, job)}


def _outcomes(record, traits=None, **extra):
    return [{"rank": 0, "traits": traits or {}, "records": [record], **extra}]


def test_the_tolerance_printed_is_the_one_used_for_the_tensors_compared_not_the_inputs_dtype():
    from suite.conformance.parallel.equivalence import build_report

    record = _token_job_record()  # the inputs are int64; the parameters compared are float32
    assert record["dtypes"] == ["float32"]
    report = build_report(_outcomes(record), world_size=1, steps=1, backend="gloo", device="cpu")
    assert report.passed and (report.rtol, report.atol) == (1.3e-6, 1e-5)
    assert "(float32 rtol 1.3e-06, atol 1e-05)" in report.detail and "rtol 0," not in report.detail
    declared = build_report(_outcomes(record), world_size=1, steps=1, backend="gloo", device="cpu",
                            tolerance=(1e-3, 1e-4))
    assert "(rtol 0.001, atol 0.0001, declared)" in declared.detail
    both = build_report(_outcomes({**record, "dtypes": ["float32", "float64"]}), world_size=1, steps=1,
                        backend="gloo", device="cpu")
    assert "float32 rtol 1.3e-06, atol 1e-05; float64 rtol 1e-07, atol 1e-07" in both.detail
    assert (both.rtol, both.atol) == (1.3e-6, 1e-5)  # the loosest


@pytest.mark.parametrize("field", ["param_dtype", "reduce_dtype", "output_dtype"])
def test_mixed_precision_is_recognised_from_any_field_of_the_policy(field):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from suite.conformance.parallel.ddp_training import TrainingJob, job_traits
    from suite.conformance.parallel.equivalence import MIXED_PRECISION, build_report

    def traits(**job_fields):
        job = TrainingJob(model_fn=None, loss_fn=None, optimizer_fn=None, inputs=(), targets=(), steps=1,
                          fsdp_kwargs={"mp_policy": MixedPrecisionPolicy(**{field: torch.bfloat16})}, **job_fields)
        return job_traits(job)

    assert traits()["mixed_precision"] == f"{field}=bfloat16"
    # a reference run in bf16 matches bf16 parameters, not a bf16 reduction or output
    assert bool(traits(reference_dtype=torch.bfloat16)["mixed_precision"]) == (field != "param_dtype")
    diverged = {"step": 1, "max": {"gradient": 0.1}, "first": ("gradient", "0.weight", 0.1), "dtypes": ["float32"]}
    report = build_report(_outcomes(diverged, traits()), world_size=2, steps=1, backend="gloo", device="cpu")
    assert report.reason == MIXED_PRECISION and f"policy ({field}=bfloat16)" in report.detail


def test_a_compiled_run_whose_backend_got_no_graph_is_not_compiled_not_equivalent():
    from suite.conformance.parallel.equivalence import build_report

    outcomes = _outcomes(_token_job_record(), compiled_graphs=0, not_compiled="the backend received no graph: x")
    report = build_report(outcomes, world_size=1, steps=1, backend="gloo", device="cpu")
    assert report.verdict == "not_compiled" and not report.passed and report.divergence is None
    assert report.detail.startswith("not compiled: the backend received no graph: x; the ranks ran DDP eagerly")
    case = CASES.get("sequential_compiled_ddp_w2")
    assert judge(case, report)[0] and not judge(CASES.get("mlp_compiled_ddp_w2"), report)[0]
