"""The source article, and its code as written, kept only to show its defects (see defects.py).

"The source article" everywhere in torchsuite means one text: a Chinese introduction to
PyTorch's four core ideas (dynamic graph, dynamic gradients, custom models, parallel
computation) with two formulas, the chain rule dL/dθ = Σ_i dL/dy_i · dy_i/dθ and data-parallel
averaging P(x) = 1/N Σ_i f_i(x), and three models with their training loops: an MNIST CNN
(its section 3.2.1), a CIFAR-10 LeNet (4.1) and a Speech Commands CNN (4.2). It is the
project's seed document (seed/000_a7d79b8efbf97a62.txt beside the project's design notes);
docs/defects.md lists what its code gets wrong and how the suite corrects it.

Nothing else in the suite runs the code below: the registry in models.py holds the corrected
models.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.cases.models import MnistNet, SpeechNet


class ArticleMnistNet(MnistNet):
    """Section 3.2.1 verbatim: fc1 expects 64*6*6 features, which only a 16x16 input gives."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64 * 6 * 6, 128)


# Section 4.2's network is already the one in models.py; only its input was wrong.
ArticleSpeechNet = SpeechNet


def article_mnist_training_loop(net_class, batches, steps: int) -> list[float]:
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


def article_speech_clip(seconds: float = 0.2, sample_rate: int = 16_000) -> torch.Tensor:
    """Section 4.2's input: one raw clip, `x.unsqueeze(0).unsqueeze(0)` -> (1, 1, samples)."""
    return torch.randn(int(seconds * sample_rate)).unsqueeze(0).unsqueeze(0)
