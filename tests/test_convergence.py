"""Time to accuracy (suite.convergence): the scoring rule, the synthetic task, runs to a target,
a loop that cannot learn, real-format data, `torchsuite converge` and its report."""
import copy
import dataclasses
import json
import math

import pytest
import torch

from suite import results
from suite.cases.models import CASES as MODELS, RealTarget, article_models
from suite.cli import main
from suite.convergence import score as scoring
from suite.convergence.runs import choose_data, train_to_target
from suite.data import synthetic_task_batches, synthetic_task_heldout

CPU = torch.device("cpu")


def run(seed, steps, converged=True, time_s=None):
    return {"seed": seed, "converged": converged, "steps_to_target": steps if converged else None,
            "time_to_target_s": (time_s if time_s is not None else steps / 100) if converged else None}


# -- the scoring rule ---------------------------------------------------------------------------

def test_the_score_drops_the_fastest_and_slowest_run():
    result = scoring.score([run(0, 300), run(1, 100), run(2, 500), run(3, 200), run(4, 400)])
    assert result.valid and result.dropped == 2
    assert result.steps_to_target == pytest.approx(300) and result.time_to_target_s == pytest.approx(3.0)


def test_one_run_that_did_not_converge_is_reported_and_dropped_as_the_slowest():
    result = scoring.score([run(0, 300), run(1, 100, converged=False), run(2, 500), run(3, 200)])
    assert result.valid and result.converged == 3 and result.runs == 4
    assert result.steps_to_target == pytest.approx(400)  # 200 (fastest) and the failed run (slowest) dropped
    assert "did not converge" in result.note


def test_two_runs_that_did_not_converge_invalidate_the_score():
    result = scoring.score([run(0, 300), run(1, 0, converged=False), run(2, 0, converged=False), run(3, 200)])
    assert not result.valid and result.time_to_target_s is None and "2 of 4" in result.note


def test_with_fewer_than_three_runs_nothing_is_dropped_and_none_may_fail():
    assert scoring.score([run(0, 100), run(1, 300)]).steps_to_target == pytest.approx(200)
    assert not scoring.score([run(0, 100), run(1, 0, converged=False)]).valid


def test_steps_tolerance_is_a_fraction_but_never_under_two_intervals():
    # By hand from docs/convergence.md's rule, a quarter of the baseline's steps, at least two
    # evaluation intervals: 1000 steps allow 250 (over 2 x 25 = 50); 100 steps allow 50 (over 25).
    assert scoring.steps_tolerance(1000, 25) == pytest.approx(250)
    assert scoring.steps_tolerance(100, 25) == pytest.approx(50)
    assert scoring.steps_disagree(1300, 1000, 25) and not scoring.steps_disagree(1200, 1000, 25)


# -- the synthetic task -------------------------------------------------------------------------

def test_the_synthetic_task_is_the_same_for_a_seed_and_other_for_another(model_spec):
    task = model_spec.convergence.synthetic
    first = [b for _, b in zip(range(2), synthetic_task_batches(model_spec, task, 8, seed=3))]
    again = [b for _, b in zip(range(2), synthetic_task_batches(model_spec, task, 8, seed=3))]
    other = next(synthetic_task_batches(model_spec, task, 8, seed=4))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0])
    x, y = synthetic_task_heldout(model_spec, task)
    assert x.shape == (task.eval_samples, *model_spec.input_shape) and torch.equal(synthetic_task_heldout(model_spec, task)[0], x)
    assert not torch.equal(x[:8], first[0][0])  # the held-out split is not a training batch


def test_the_synthetic_target_is_within_what_the_data_allows(model_spec):
    """Knowing the class patterns, a matched filter reaches the target on the held-out split: what
    makes the task take hundreds of steps is learning the patterns, not a ceiling below the target."""
    task = model_spec.convergence.synthetic
    patterns = torch.randn((model_spec.num_classes, *model_spec.input_shape),
                           generator=torch.Generator().manual_seed(task.data_seed)).flatten(1)
    x, y = synthetic_task_heldout(model_spec, task)
    assert ((x.flatten(1) @ patterns.T).argmax(1) == y).float().mean() >= task.accuracy
    assert task.overlap > 0


# -- runs to a target ---------------------------------------------------------------------------

def speech_task(**changes):
    return dataclasses.replace(MODELS.get("speech_cnn").convergence.synthetic, **changes)


def test_a_run_capped_before_its_target_is_not_converged_and_has_no_time():
    record = train_to_target(MODELS.get("speech_cnn"), device=CPU, task=speech_task(max_steps=30, eval_every=25))
    assert not record["converged"] and record["time_to_target_s"] is None and record["steps_to_target"] is None
    assert record["steps_run"] == 30 and [c["step"] for c in record["loss_curve"]] == [25, 30]
    assert record["final_accuracy"] < record["target"]


def test_bfloat16_autocast_runs_and_is_recorded():
    record = train_to_target(MODELS.get("speech_cnn"), device=CPU, dtype="bfloat16", seed=5,
                             task=speech_task(max_steps=25))
    assert record["dtype"] == "bfloat16" and record["seed"] == 5
    assert all(math.isfinite(c["loss"]) for c in record["loss_curve"])


def test_the_articles_literal_loop_cannot_learn_and_is_recorded_as_not_converged():
    """Section 3.2.2 as written builds Net() at every step: on a task the corrected loop learns
    within the cap, the literal loop never reaches the target."""
    spec = MODELS.get("mnist_cnn")
    easy = dataclasses.replace(spec.convergence.synthetic, signal=1.0, eval_every=10, eval_samples=200,
                               max_steps=30)
    corrected = train_to_target(spec, device=CPU, task=easy, batch_size=32)
    literal = train_to_target(spec, device=CPU, task=easy, batch_size=32, loop="article_literal")
    assert corrected["converged"], corrected["loss_curve"]
    assert not literal["converged"] and literal["loop"] == "article_literal"
    assert literal["time_to_target_s"] is None and literal["final_accuracy"] < 0.5


def test_real_format_files_are_trained_on_to_a_target_they_can_reach(tmp_path):
    """Tiny Speech Commands files (a tone per word) through torchaudio's loader and the MFCC front end."""
    from suite.fakedata import write_speech_commands

    write_speech_commands(tmp_path, labels=("yes", "no", "up"), clips_per_label=4)
    spec = MODELS.get("speech_cnn")
    assert choose_data(spec, "auto", tmp_path) == "real"
    record = train_to_target(spec, device=CPU, data="real", data_root=tmp_path, batch_size=3,
                             real_target=RealTarget(accuracy=1.0, max_epochs=30, source="a test's"))
    assert record["data"] == "real" and record["converged"] and record["test_samples"] == 3
    assert record["epochs_to_target"] == len(record["loss_curve"]) and record["eval_every"] == "epoch"


def test_auto_takes_real_data_only_where_it_is(tmp_path):
    from suite.fakedata import write_mnist

    spec = MODELS.get("mnist_cnn")
    assert choose_data(spec, "auto", tmp_path / "none") == "synthetic"
    write_mnist(tmp_path, n_train=10, n_test=10)
    assert choose_data(spec, "auto", tmp_path) == "real"


def test_every_model_declares_real_and_synthetic_targets_with_their_source(model_spec):
    targets = model_spec.convergence
    assert 0 < targets.real.accuracy < 1 and targets.real.max_epochs >= 1 and len(targets.real.source) > 40
    assert 1 / model_spec.num_classes < targets.synthetic.accuracy < 1
    assert targets.synthetic.max_steps % targets.synthetic.eval_every == 0


# -- the command, its records and its report ----------------------------------------------------

@pytest.fixture(scope="module")
def speech_results(tmp_path_factory):
    """A real `torchsuite converge` of the speech model: 1 run on the synthetic task."""
    out = tmp_path_factory.mktemp("converge")
    assert main(["converge", "--models", "speech_cnn", "--runs", "1", "--data", "synthetic", "--out", str(out),
                 "--machine-name", "alpha"]) == 0
    (path,) = out.glob("*.json")
    return path


def test_converge_writes_one_convergence_record_per_seeded_run(speech_results):
    data = results.load(speech_results)
    (record,) = data["records"]
    assert data["status"] == "complete" and data["run"]["command"] == "converge"
    assert record["kind"] == "convergence" and record["converged"] and record["data"] == "synthetic"
    for field in ("model", "device", "dtype", "seed", "time_to_target_s", "steps_to_target",
                  "final_accuracy", "target", "loss_curve"):
        assert field in record
    task = MODELS.get("speech_cnn").convergence.synthetic
    assert record["steps_to_target"] % task.eval_every == 0 and record["steps_to_target"] >= 100
    assert record["final_accuracy"] >= record["target"] == task.accuracy
    curve = record["loss_curve"]
    assert [c["step"] for c in curve] == list(range(task.eval_every, record["steps_to_target"] + 1, task.eval_every))
    assert curve[-1]["loss"] < curve[0]["loss"] and curve[-1]["elapsed_s"] == record["time_to_target_s"]


@pytest.mark.parametrize("argv, message", [
    (["--models", "speech_cnn", "--runs", "0"], "--runs must be a whole number of at least 1"),
    (["--models", "resnet"], "unknown model 'resnet'"),
    (["--models", "speech_cnn", "--data", "real"], "Speech Commands not found under"),
    (["--models", "speech_cnn", "--seed", "-1"], "leave the run seeds' range"),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(argv, message, capsys, tmp_path):
    assert main(["converge", *argv, "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value", [("--device", "tpu"), ("--dtype", "float16"), ("--data", "some")])
def test_an_unknown_choice_is_argparses_error_with_exit_2(option, value, capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        main(["converge", "--models", "speech_cnn", option, value, "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: invalid choice: '{value}' (choose from " in err, err
    assert not (tmp_path / "out").exists()


def test_converge_called_directly_refuses_an_unknown_dtype_or_data(tmp_path):
    from suite.convergence.command import converge
    from suite.errors import SuiteError

    with pytest.raises(SuiteError, match="unknown dtype 'float16'"):
        converge(model_names=["speech_cnn"], dtype="float16", out_dir=tmp_path / "out")
    with pytest.raises(SuiteError, match="unknown data 'some'"):
        converge(model_names=["speech_cnn"], data="some", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_absent_device_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, anywhere
    assert main(["converge", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "device 'cuda' requested but unavailable" in capsys.readouterr().err


def test_an_interrupted_converge_keeps_its_finished_runs(monkeypatch, tmp_path):
    from suite.convergence import command

    done = []

    def fake_run_job(job, **kwargs):
        if done:
            raise KeyboardInterrupt
        done.append(job)
        return {"kind": "convergence", "model": job.spec.name, "seed": job.seed, "converged": False,
                "steps_run": 1, "final_accuracy": 0.1}

    monkeypatch.setattr(command, "run_job", fake_run_job)
    assert main(["converge", "--models", "speech_cnn", "--runs", "3", "--data", "synthetic",
                 "--out", str(tmp_path)]) == 130
    (path,) = tmp_path.glob("*.json")
    data = results.load(path)
    assert data["status"] == "interrupted" and [r["seed"] for r in data["records"]] == [0]


def test_the_run_plan_lists_the_convergence_steps_with_estimates():
    from suite.runner import make_plan

    _, _, steps = make_plan(device_request="cpu", quick=True, verdict_sources=[], convergence=True)
    converge = [s for s in steps if s.kind == "convergence"]
    assert [s.context["model"] for s in converge] == article_models()
    assert all(s.estimate_s > 0 and "3 seeded runs" in s.label for s in converge)
    assert steps[-len(converge):] == converge
    assert not [s for s in make_plan(device_request="cpu", quick=True, verdict_sources=[])[2]
                if s.kind == "convergence"]


def _other_machine(data, name, time_factor=1.0, steps_factor=1.0, timing_factor=1.0):
    out = copy.deepcopy(data)
    out["machine"]["name"] = name
    for record in out["records"]:
        if record["kind"] == "convergence":
            record["time_to_target_s"] *= time_factor
            record["steps_to_target"] = round(record["steps_to_target"] * steps_factor)
            for point in record["loss_curve"]:
                point["elapsed_s"] *= time_factor
        if record["kind"] == "timing":
            record["median_s"] *= timing_factor
            record["samples"] = [s * timing_factor for s in record["samples"]]
            record["throughput"] /= timing_factor
    return out


def _with_a_training_timing(data):
    out = copy.deepcopy(data)
    out["records"].append({"kind": "timing", "model": "speech_cnn", "mode": "train", "device": "cpu",
                           "setup": "cpu", "world_size": 1, "batch_size": 100, "dtype": "float32",
                           "threads": out["machine"].get("usable_cores") or out["machine"].get("cores"),
                           "median_s": 0.01, "iqr_s": 1e-4, "samples": [0.01] * 10, "throughput": 1e4,
                           "flags": [], "quick": False})
    return out


def test_the_report_shows_time_to_target_and_the_speedups_side_by_side(speech_results, tmp_path, tables_only):
    base = _with_a_training_timing(results.load(speech_results))
    files = []
    for name, data in [("alpha", base),
                       ("beta", _other_machine(base, "beta", time_factor=0.5, timing_factor=0.5)),
                       ("gamma", _other_machine(base, "gamma", time_factor=0.5, steps_factor=2.0)),
                       ("delta", _other_machine(base, "delta", time_factor=0.25, timing_factor=1.0))]:
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(data))
    assert main(["report", *map(str, files), "--out", str(tmp_path / "report")]) == 0
    from suite.report import convergence, load_all, tables

    loaded = load_all(files)
    scores = convergence.scores_table(loaded, "alpha").set_index("machine")
    assert scores.loc["alpha", "steps vs reference"] == "reference"
    assert scores.loc["beta", "steps vs reference"].startswith("agrees")
    assert scores.loc["gamma", "steps vs reference"].startswith("NUMERICS DIFFER: +100%")
    comp = tables.comparison(tables.long_table(loaded), tables.machine_order(loaded), "alpha")
    speedups = convergence.speedups_table(loaded, comp, "alpha").set_index("machine")
    assert speedups.loc["beta", "time-to-target speedup"] == pytest.approx(2.0)
    assert speedups.loc["beta", "throughput speedup"] == pytest.approx(2.0)
    assert speedups.loc["beta", "the two"] == "agree"
    assert speedups.loc["delta", "time-to-target speedup"] == pytest.approx(4.0)
    assert speedups.loc["delta", "the two"] == "DISAGREE"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Time to accuracy" in markdown and "## Speedup in time to target beside" in markdown
    assert (tmp_path / "report" / "convergence.png").stat().st_size > 10_000
    assert 'alt="Time to accuracy" src="data:image/png;base64,' in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.slow
def test_every_model_reaches_its_synthetic_target_on_this_machine(model_spec):
    record = train_to_target(model_spec, device=CPU, seed=0)
    task = model_spec.convergence.synthetic
    assert record["converged"], record["loss_curve"][-3:]
    assert record["steps_to_target"] >= 4 * task.eval_every  # hundreds of steps: training, not start-up
