"""FLOPs of one iteration, counted by torch.utils.flop_counter.FlopCounterMode.

Counted on the meta device: FLOPs depend only on shapes, so no real arithmetic is spent and
the count is the same whatever device, AMP dtype or memory format is timed.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from suite.cases.models import ModelSpec


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None) -> int:
    """A convolution's backward: each gradient asked for (input, weight) costs one forward.

    FlopCounterMode's own formula (torch 2.11) ignores `groups` in the backward, so a depthwise
    convolution's backward counts as `groups` times its real work (65x its forward for 64
    channels, not 2x: docs/found.md) and MobileNet's train FLOP/s came out above the peak."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


CUSTOM_FORMULAS = {torch.ops.aten.convolution_backward: conv_backward_flops}


def count_flops(spec: ModelSpec, mode: str, batch_size: int) -> int:
    """FLOPs of one train step (forward, loss, backward, optimizer step) or one eval forward."""
    try:
        return _count_on("meta", spec, mode, batch_size)
    except (NotImplementedError, RuntimeError):
        # A model whose construction or ops have no meta kernels: count with real tensors.
        return _count_on("cpu", spec, mode, batch_size)


def _count_on(device: str, spec: ModelSpec, mode: str, batch_size: int) -> int:
    with torch.device(device):
        model = spec.build(seed=0)
    inputs, labels = spec.example_batch(batch_size)
    inputs, labels = inputs.to(device), labels.to(device)
    with FlopCounterMode(display=False, custom_mapping=CUSTOM_FORMULAS) as counter:
        if mode == "train":
            optimizer = spec.make_optimizer(model.parameters())
            optimizer.zero_grad(set_to_none=True)
            spec.loss_fn(model(inputs), labels).backward()
            optimizer.step()
        else:
            model.eval()
            # no_grad, not inference_mode: the same FLOPs, and FlopCounterMode under inference_mode
            # fails on a weight-norm parametrization (wav2vec2's; docs/found.md).
            with torch.no_grad():
                model(inputs)
    return int(counter.get_total_flops())
