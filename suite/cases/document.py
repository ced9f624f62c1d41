"""The source document's code as written, kept only to show its defects (see defects.py).

Nothing else in the suite runs these: the registry in models.py holds the corrected models.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.models import MnistNet, SpeechNet


class DocumentMnistNet(MnistNet):
    """Section 3.2.1 verbatim: fc1 expects 64*6*6 features, which only a 16x16 input gives."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64 * 6 * 6, 128)


# Section 4.2's network is already the one in models.py; only its input was wrong.
DocumentSpeechNet = SpeechNet


def document_mnist_training_loop(net_class, batches, steps: int) -> list[float]:
    """Section 3.2.2's loop as written: `Net()` is built anew for the optimizer and at every step.

    Returns the loss of each step. The optimizer holds a model that never sees a gradient and
    each step evaluates a fresh random model, so the loss cannot fall.
    """
    optimizer = torch.optim.SGD(net_class().parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _, (images, labels) in zip(range(steps), batches):
        images = images.view(-1, 1, 28, 28)
        optimizer.zero_grad()
        outputs = net_class()(images)
        loss = F.nll_loss(outputs, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def document_speech_clip(seconds: float = 0.2, sample_rate: int = 16_000) -> torch.Tensor:
    """Section 4.2's input: one raw clip, `x.unsqueeze(0).unsqueeze(0)` -> (1, 1, samples)."""
    return torch.randn(int(seconds * sample_rate)).unsqueeze(0).unsqueeze(0)
