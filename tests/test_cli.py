import json
import subprocess
import sys

import pytest

from suite import cases
from suite.cli import main


def test_list_names_every_registered_case_with_its_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind, registry in cases.all_registries().items():
        for name in registry.names():
            assert any(line.split()[:2] == [kind, name] for line in out.splitlines())


def test_list_json_matches_the_registries(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = [(k, n) for k, r in cases.all_registries().items() for n in r.names()]
    assert [(r["kind"], r["name"]) for r in rows] == expected
    assert {"mnist_cnn", "cifar10_lenet", "speech_cnn"} <= {r["name"] for r in rows}


def test_unknown_model_is_one_line_listing_the_valid_names(capsys):
    assert main(["train", "resnet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown model 'resnet'; valid: bert_base_mlm, " in err and " mnist_cnn, " in err


def test_absent_device_is_a_one_line_error_with_no_traceback():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path needs a machine without it")
    proc = subprocess.run([sys.executable, "-m", "suite", "train", "mnist_cnn", "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("torchsuite: error: device 'cuda' requested but unavailable")
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_train_reports_its_losses(capsys, tmp_path):
    assert main(["train", "speech_cnn", "--steps", "3", "--data-root", str(tmp_path)]) == 0
    assert "speech_cnn on cpu (synthetic data" in capsys.readouterr().out


def test_env_json_names_the_stack(capsys):
    import torch

    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__ and info["cores"] >= 1


def test_a_reader_that_stops_early_gets_no_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "suite", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdout.readline()
        proc.stdout.close()  # like `torchsuite list | head -1`
        _, err = proc.communicate(timeout=120)  # reads stderr to the end, or gives up in time
    finally:
        proc.kill()  # a no-op once it has exited
        proc.wait()
    assert "Traceback" not in err.decode() and "BrokenPipeError" not in err.decode()
