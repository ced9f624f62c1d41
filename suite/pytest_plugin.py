"""pytest plugin (entry point pytest11): torchsuite's markers, hardware skips and fixtures.

Kept import-light: torch is imported only when a test needs hardware information.
"""
from __future__ import annotations

import pytest

MARKERS = {
    "gpu": "needs one CUDA GPU; skipped with the reason when absent",
    "multigpu": "needs two or more CUDA GPUs; skipped with the reason when absent",
    "distributed": "starts torch.distributed process groups (gloo on CPU)",
    "slow": "long-running; excluded by default, run with -m slow",
}


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config, items):
    needs = {"gpu": ("cuda", 1), "multigpu": ("cuda", 2)}
    reasons = {}
    for item in items:
        for marker, (kind, count) in needs.items():
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in reasons:
                from suite.devices import missing_reason  # imports torch: only when needed

                reasons[marker] = missing_reason(kind, count)
            if reasons[marker]:
                item.add_marker(pytest.mark.skip(reason=reasons[marker]))


@pytest.fixture
def check_function():
    """check_function(fn, inputs, *, reference=None, backward_reference=None) for a test: runs every
    check of a custom Function, fails the test with the report's table when a check fails, and
    returns the report."""
    from suite.conformance.functions.check import assert_function_conforms

    return assert_function_conforms


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-benchmark, which may not be installed
def pytest_benchmark_update_machine_info(config, machine_info):
    """Saved benchmark runs name the PyTorch stack, so --benchmark-compare shows when it changed."""
    import torch

    cuda = torch.cuda.is_available()
    machine_info["torch"] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "threads": torch.get_num_threads(),
    }
