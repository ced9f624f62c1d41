"""nn.DataParallel equals the bare module: a pass-through without GPUs, a scatter/gather with them.

With no GPU, or one, DataParallel calls its module directly, so comparing it with the bare
module compares the module with its own copy: such a comparison checks nothing. The
comparisons therefore need two GPUs (`multigpu`, skipped with what is missing); on a CPU the
tests check the pass-through itself and that the checker sees a difference when there is one.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.testing import assert_close

from suite.cases.models import CASES as MODELS
from suite.cases.parallel import CLASSES, FEATURES, batchnorm_mlp, dropout_mlp, tiny_mlp
from suite.conformance.parallel.dataparallel import check_dataparallel
from suite.devices import cuda_count
from suite.timing.settings import preserved_settings


@pytest.fixture
def full_float32():
    """TF32 off (it would blur the float32 comparisons), and every setting restored afterwards."""
    with preserved_settings():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield


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
    calls = []
    module.register_forward_hook(lambda mod, args, out: calls.append((args[0], out)))
    inputs = _mlp_batch(3)[0]
    out = wrapped(inputs)
    # the module itself ran, once, on the very input tensor, and its output came back untouched
    assert len(calls) == 1 and calls[0][0] is inputs and calls[0][1] is out


def test_the_checker_sees_a_wrapped_model_that_differs():
    """Dropout draws a new mask for the wrapped model: the report must say they differ."""
    report = check_dataparallel(dropout_mlp, *_mlp_batch(6), loss_fn=F.cross_entropy)
    assert not report.passed and report.first_mismatch == "output output", report.detail
    assert report.max_abs_diff["output"] > 0


@pytest.mark.multigpu
@pytest.mark.parametrize("spec", list(MODELS), ids=lambda s: s.name)
def test_article_models_over_gpus_equal_the_bare_module(spec):
    inputs, targets = spec.example_batch(2 * cuda_count() + 1)  # every GPU gets a chunk
    report = check_dataparallel(spec.factory, inputs, targets, loss_fn=spec.loss_fn)
    assert report.passed, report.detail
    assert len(report.device_ids) == cuda_count() >= 2


@pytest.mark.multigpu
@pytest.mark.parametrize("batch", ["even", "uneven"])
def test_outputs_and_gradients_over_gpus_equal_one_device(batch):
    size = 4 * cuda_count() + (batch == "uneven")  # torch.chunk leaves the last GPU short
    report = check_dataparallel(tiny_mlp, *_mlp_batch(size), loss_fn=F.cross_entropy)
    assert report.passed, report.detail
    assert len(report.device_ids) == cuda_count()


@pytest.mark.multigpu
def test_batchnorm_replicas_normalise_their_own_chunk_and_only_the_first_keeps_its_statistics(full_float32):
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
