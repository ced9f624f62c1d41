import json
import shlex
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


# Interpreters of their own, each seconds of importing torch: launched when collection ends (conftest).
@pytest.mark.launch([sys.executable, "-m", "suite", "train", "mnist_cnn", "--device", "cuda"])
def test_absent_device_is_a_one_line_error_with_no_traceback(launched):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path needs a machine without it")
    returncode, output = launched.wait(timeout=120)  # stdout (nothing) and stderr
    assert returncode == 2, output
    assert output.startswith("torchsuite: error: device 'cuda' requested but unavailable")
    assert "Traceback" not in output and output.count("\n") == 1


def test_train_reports_its_losses(capsys, tmp_path):
    assert main(["train", "speech_cnn", "--steps", "3", "--data-root", str(tmp_path)]) == 0
    assert "speech_cnn on cpu (synthetic data" in capsys.readouterr().out


def test_env_json_names_the_stack(capsys):
    import torch

    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__ and info["cores"] >= 1


# Its reader is gone before torchsuite has imported torch, so that its first write meets a closed pipe
# (`head -n 1` could take the first line after torchsuite had written all 52 KB into the pipe).
@pytest.mark.launch(["bash", "-c", f"set -o pipefail; {shlex.quote(sys.executable)} -m suite list | true"])
def test_a_reader_that_stops_early_gets_no_traceback(launched):
    returncode, output = launched.wait(timeout=120)  # torchsuite's stderr
    assert returncode == 141, output  # 128 + SIGPIPE, as Unix tools end
    assert "Traceback" not in output and "BrokenPipeError" not in output
