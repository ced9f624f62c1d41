"""A run saved and resumed trains as the same distributed run that never stopped.

The cases come from suite.cases.resume and run on the shared pools (one per world size). The
default run keeps one resharded FSDP2 case (2 to 4 ranks, Adam, a warm-up schedule), the quick
verdicts (BatchNorm under DDP, exact; DCP without the optimizer), and the planted user
checkpoints and non-persistent counter; the rest of the matrix (ResNet-18 among it) is `slow`.
The report's own logic is tested on hand-made rank outcomes, without processes.
"""

import pytest
import torch

from suite.cases.expect import FAILS
from suite.cases.resume import CASES, RESUME_CAUSES, ResumeCase, TorchSave, warmup
from suite.cases.parallel import adam, batchnorm_mlp, sgd_momentum, tiny_mlp
from suite.conformance.parallel.resume import (AFTER_LOAD, AFTER_RESUME, DIVERGES_AFTER_RESUME, LOSS_CURVE,
                                               OPTIMIZER_STATE, RNG_STATE, _CAUSES, _RESTORED,
                                               build_resume_report, check_case, check_resume, judge, verdicts)

DEFAULT = {"fsdp_adam_warmup_2to4", "ddp_counter_buffer_2to2", "ddp_torch_save_without_optimizer_2to2",
           "ddp_dropout_torch_save_without_rng_2to2"}


@pytest.fixture(scope="module", autouse=True)
def _close_the_four_rank_pool():
    """Only the slow tests elsewhere use 4 ranks: its group does not outlive this file."""
    yield
    from suite.distributed import get_pool

    get_pool(4).close()


@pytest.mark.distributed
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[] if c.name in DEFAULT else [pytest.mark.slow])
                                  for c in CASES])
def test_case_reaches_its_expected_verdict(case):
    passed, detail = judge(case, check_case(case))
    assert passed, detail


@pytest.mark.distributed
def test_quick_verdicts_are_records_that_pass():
    records = list(verdicts("cpu", quick=True))
    assert [r["case"] for r in records] == [c.name for c in CASES if c.quick]
    assert all(r["passed"] and r["check"] == "resume" and r["kind"] == "conformance" for r in records), records
    assert any("expected to fail: optimizer_state_not_restored" in r["detail"] for r in records)
    assert any("BatchNorm" in c.title for c in CASES if c.quick and not c.expect)


@pytest.mark.distributed
def test_a_user_checkpoint_that_leaves_out_the_optimizer_is_named_and_a_complete_one_is_exact():
    x, y = torch.randn(8, 8), torch.randint(0, 4, (8,))
    for saved, expected in ((TorchSave(optimizer=False), "optimizer state 0.weight momentum_buffer"),
                            (TorchSave(), None)):
        report = check_resume(batchnorm_mlp, x, y, loss_fn=torch.nn.functional.cross_entropy,
                              optimizer_fn=sgd_momentum, save_fn=saved.save, load_fn=saved.load)
        assert report.checkpoint == str(saved)
        if expected is None:
            assert report.passed, report.detail
        else:
            assert (report.phase, report.reason) == (AFTER_LOAD, OPTIMIZER_STATE) and expected in report.detail


# -- the declared matrix -------------------------------------------------------------------------

def test_the_matrix_covers_every_required_configuration():
    kept = [c for c in CASES if not c.expect]
    assert {c.wrapper for c in kept} == {"ddp", "fsdp"}
    assert any(c.optimizer == sgd_momentum for c in kept) and any(c.optimizer.optimizer is torch.optim.Adam for c in kept)
    assert any(c.scheduler is warmup for c in kept)
    fsdp_sizes = {(c.world_size, c.resume_world_size) for c in kept if c.wrapper == "fsdp"}
    assert {(2, 2), (2, 4), (4, 2)} <= fsdp_sizes
    lost = {e.cause for c in CASES for e in c.expect if e.outcome == FAILS}
    assert lost == set(RESUME_CAUSES) - {"parameters_not_restored"}
    assert any(c.checkpoint is not None for c in kept) and any(c.model.__name__ == "resnet18_cifar" for c in kept)
    assert any(c.quick for c in CASES) and all(c.world_size == c.resume_world_size == 2 for c in CASES if c.quick)


def test_every_declared_cause_is_one_the_checker_names_and_explains():
    assert set(RESUME_CAUSES) <= set(_RESTORED.values()) | {RNG_STATE} and set(RESUME_CAUSES) <= set(_CAUSES)
    for case in CASES:
        text = case.describe()
        assert "\n" not in text and case.name and f"on {case.resume_world_size} ranks" in text


def test_a_case_whose_batch_does_not_split_over_both_world_sizes_is_an_error():
    with pytest.raises(ValueError, match="does not split over both 2 and 3 ranks"):
        ResumeCase(name="x", title="x", model=tiny_mlp, optimizer=adam, wrapper="fsdp", world_size=2,
                   resume_world_size=3, batch=8)


def test_check_resume_refuses_a_save_outside_the_run_and_a_batch_the_second_group_cannot_split():
    x, y = torch.randn(8, 8), torch.randint(0, 4, (8,))
    with pytest.raises(ValueError, match="saved_at"):
        check_resume(tiny_mlp, x, y, loss_fn=torch.nn.functional.cross_entropy, steps=2, saved_at=2)
    with pytest.raises(ValueError, match="does not split into 3"):
        check_resume(tiny_mlp, x, y, loss_fn=torch.nn.functional.cross_entropy, resume_world_size=3)
    with pytest.raises(ValueError, match="both save_fn and load_fn"):
        check_resume(tiny_mlp, x, y, loss_fn=torch.nn.functional.cross_entropy, save_fn=TorchSave().save)


# -- what the report says, from hand-made rank outcomes ------------------------------------------

def _saved(*losses, ranks=2):
    return [{"rank": rank, "traits": {}, "records": [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)]}
            for rank in range(ranks)]


def _record(step, first=None, loss=1.0, reference_loss=1.0, what="every tensor", rng_differs=()):
    record = {"step": step, "what": what, "max": {"parameter": 0.0 if first is None else first[2]},
              "first": first, "dtypes": ["float32"], "grads_scaled_by_world_size": False}
    if what == "every tensor":
        record.update(loss=loss, reference_loss=reference_loss)
    else:
        record["rng_differs"] = list(rng_differs)
    return record


def _outcomes(*records, ranks=4):
    return [{"rank": rank, "traits": {}, "records": list(records)} for rank in range(ranks)]


def _report(second, first=None):
    return build_resume_report(first or _saved(2.0, 1.0), second, wrapper="fsdp", world_sizes=(2, 4), steps=4,
                               saved_at=2, backend="gloo", device="cpu")


def _loaded(first=None, rng_differs=()):
    return _record(2, first=first, what="state after loading", rng_differs=rng_differs)


def test_a_clean_resume_passes_and_prints_its_loss_curve():
    report = _report(_outcomes(_loaded(), _record(3), _record(4)))
    assert report.passed and report.losses == [2.0, 1.0, 1.0, 1.0] == report.reference_losses
    assert report.detail.startswith("resumes as if uninterrupted: FSDP2, 2 steps on 2 ranks, saved with DCP, "
                                    "loaded on 4 ranks, 2 more (gloo, cpu); the loss curve 2 1 1 1")


@pytest.mark.parametrize("category, cause", [("optimizer state", OPTIMIZER_STATE),
                                             ("scheduler state", "lr_schedule_not_restored"),
                                             ("parameter", "parameters_not_restored"),
                                             ("non-persistent buffer", "non_persistent_buffer_not_restored")])
def test_what_differs_right_after_loading_names_what_the_checkpoint_lost(category, cause):
    lost = _loaded(first=(category, "0.weight exp_avg", 0.5))
    report = _report(_outcomes(lost, _record(3, first=("parameter", "0.weight", 1.0))))
    assert not report.passed and (report.phase, report.reason) == (AFTER_LOAD, cause)
    assert "diverges right after loading: " in report.detail and f"{category} 0.weight exp_avg" in report.detail


def test_a_divergence_after_a_faithful_load_is_the_random_state_s_when_it_differed_else_unexplained():
    after = _report(_outcomes(_loaded(), _record(3, first=("gradient", "0.weight", 0.1))))
    assert (after.phase, after.reason, after.divergence.step) == (AFTER_RESUME, DIVERGES_AFTER_RESUME, 3)
    rng = _report(_outcomes(_loaded(rng_differs=["cpu"]), _record(3, first=("gradient", "0.weight", 0.1))))
    assert (rng.phase, rng.reason) == (AFTER_RESUME, RNG_STATE) and "the cpu generator" in rng.detail
    unused = _report(_outcomes(_loaded(rng_differs=["cpu"]), _record(3), _record(4)))
    assert unused.passed  # a random state nothing draws from does not matter


def test_a_loss_curve_that_leaves_the_tolerance_fails_even_when_every_tensor_agrees():
    report = _report(_outcomes(_loaded(), _record(3, loss=1.1), _record(4)))
    assert report.reason == LOSS_CURVE and report.divergence is None
    assert "at step 3 the loss is 1.1, uninterrupted 1" in report.detail
