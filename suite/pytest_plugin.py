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
    from suite.devices import missing_reason

    needs = {"gpu": ("cuda", 1), "multigpu": ("cuda", 2)}
    reasons = {}
    for item in items:
        for marker, (kind, count) in needs.items():
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in reasons:
                reasons[marker] = missing_reason(kind, count)
            if reasons[marker]:
                item.add_marker(pytest.mark.skip(reason=reasons[marker]))
