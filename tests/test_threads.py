"""suite.threads: the one core count and the one thread-count block the suite uses."""
import os

import pytest
import torch

from suite.threads import torch_threads, usable_cores, usable_cpus


def test_a_thread_count_set_for_a_block_is_restored_even_when_the_block_raises():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(other):
            assert torch.get_num_threads() == other
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_usable_cores_follow_the_affinity_mask_not_the_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cpus() == {3, 5} and usable_cores() == 2


def test_without_an_affinity_mask_every_cpu_counts(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpus() == set(range(6)) and usable_cores() == 6
