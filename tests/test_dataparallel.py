"""nn.DataParallel equals the bare module: a pass-through without GPUs, a scatter/gather with them."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.testing import assert_close

from suite.cases.models import CASES as MODELS
from suite.cases.parallel import CLASSES, FEATURES, batchnorm_mlp, tiny_mlp
from suite.conformance.parallel.dataparallel import check_dataparallel
from suite.devices import cuda_count


def _mlp_batch(size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(size, FEATURES, generator=generator),
            torch.randint(0, CLASSES, (size,), generator=generator))


def test_without_a_gpu_dataparallel_is_a_pass_through():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: DataParallel scatters instead of passing through")
    module = tiny_mlp()
    wrapped = nn.DataParallel(module)
    assert wrapped.module is module and wrapped.device_ids == []


@pytest.mark.parametrize("spec", list(MODELS), ids=lambda s: s.name)
def test_article_models_equal_the_bare_module(spec):
    inputs, targets = spec.example_batch(5)
    report = check_dataparallel(spec.factory, inputs, targets, loss_fn=spec.loss_fn)
    assert report.passed, report.detail
    if not torch.cuda.is_available():  # the same code on the same data: bit for bit
        assert set(report.max_abs_diff.values()) == {0.0}, report.detail


def test_batchnorm_equals_the_bare_module_when_nothing_is_scattered():
    if torch.cuda.is_available():
        pytest.skip("with GPUs each replica normalises its own chunk (see the multigpu test)")
    report = check_dataparallel(batchnorm_mlp, *_mlp_batch(6), loss_fn=F.cross_entropy)
    assert report.passed and "buffer" in report.max_abs_diff, report.detail


@pytest.mark.multigpu
@pytest.mark.parametrize("batch", ["even", "uneven"])
def test_outputs_and_gradients_over_gpus_equal_one_device(batch):
    size = 4 * cuda_count() + (batch == "uneven")  # torch.chunk leaves the last GPU short
    report = check_dataparallel(tiny_mlp, *_mlp_batch(size), loss_fn=F.cross_entropy)
    assert report.passed, report.detail
    assert len(report.device_ids) == cuda_count()


@pytest.mark.multigpu
def test_batchnorm_replicas_normalise_their_own_chunk_and_only_the_first_keeps_its_statistics():
    torch.backends.cudnn.allow_tf32 = False  # TF32 would blur the float32 comparison
    gpus = cuda_count()
    inputs, targets = _mlp_batch(4 * gpus)
    inputs = inputs.cuda()
    torch.manual_seed(0)
    model = batchnorm_mlp().cuda()
    per_chunk, first_chunk = copy.deepcopy(model), copy.deepcopy(model)
    out = nn.DataParallel(model)(inputs)
    chunks = inputs.chunk(gpus)
    assert_close(out, torch.cat([per_chunk(chunk) for chunk in chunks]))
    first_chunk(chunks[0])
    # The replica on the first GPU shares the module's buffers; the others' updates are lost.
    assert_close(model[1].running_mean, first_chunk[1].running_mean)
    assert_close(model[1].running_var, first_chunk[1].running_var)
    report = check_dataparallel(batchnorm_mlp, *_mlp_batch(4 * gpus), loss_fn=F.cross_entropy)
    assert not report.passed and report.first_mismatch == "output output", report.detail
