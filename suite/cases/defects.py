"""The source article's defects, as data: what it says, why that fails, and the correction.

Each defect carries two runnable demonstrations, both taking a scratch directory:
`literal` runs the article's code as written and must either raise `raises` (matching
`match`) or return an observation for which `symptom` holds; `corrected` runs the suite's
correction and must succeed, with `works` true on its observation (by default: `symptom` false).
A defect in what the article *says* rather than in code that fails (variable_deprecated) has
code that runs either way: there `works` states what the correction must show instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from suite.cases import source_article
from suite.cases.models import CASES as MODELS, SAMPLE_RATE
from suite.cases.registry import Registry


@dataclass(frozen=True)
class Defect:
    name: str
    models: tuple[str, ...]
    article_says: str
    problem: str
    correction: str
    literal: Callable[[Path], Any]
    corrected: Callable[[Path], Any]
    raises: type[BaseException] | None = None
    match: str = ""
    symptom: Callable[[Any], bool] | None = None
    works: Callable[[Any], bool] | None = None  # None: `not symptom`, when there is a symptom
    kind: str = "defect"

    def describe(self) -> str:
        return self.problem

    def correction_works(self, observed) -> bool:
        """Whether the corrected side's observation shows the correction working."""
        if self.works is not None:
            return self.works(observed)
        return self.symptom is None or not self.symptom(observed)


def _spec(name):
    return MODELS.get(name)


def _mnist_batch(_):
    return _spec("mnist_cnn").example_batch(4)[0]


def _fixed_batches(spec_name: str, batch_size: int = 32):
    from suite.data import synthetic_dataset

    data = synthetic_dataset(_spec(spec_name), size=batch_size)
    batch = data.tensors
    while True:
        yield batch


def _literal_loop(_):
    # The loop as written, with the corrected network so that only the loop's defect shows.
    torch.manual_seed(0)
    return source_article.article_mnist_training_loop(_spec("mnist_cnn").factory, _fixed_batches("mnist_cnn"), 15)


def _corrected_loop(_):
    from suite.training import train_loop

    spec = _spec("mnist_cnn")
    model = spec.build(seed=0)
    return train_loop(model, spec.make_optimizer(model.parameters()), spec.loss_fn,
                      _fixed_batches("mnist_cnn"), 15)


def _loss_did_not_fall(losses: list[float]) -> bool:
    """True unless the mean of the last three losses is below half the first loss."""
    return not sum(losses[-3:]) / 3 < 0.5 * losses[0]


def _first_mnist_batch(root: Path, transform):
    from torchvision.datasets import MNIST

    from suite.fakedata import write_mnist

    write_mnist(root)
    loader = torch.utils.data.DataLoader(MNIST(str(root), train=True, transform=transform), batch_size=4)
    return next(iter(loader))


def _mnist_transform():
    from suite.data import mnist_transform

    return mnist_transform()


def _speech_features(root: Path):
    from suite.data import speech_commands

    from suite.fakedata import write_speech_commands

    write_speech_commands(root)
    features, label = speech_commands(root, frontend=_spec("speech_cnn").frontend())[0]
    return _spec("speech_cnn").build()(features.unsqueeze(0)), features.shape


def _article_librosa_call(_):
    import librosa

    return librosa.util.sample_rate.resample  # section 4.2's first data-loading call


def _speech_clips(root: Path) -> Path:
    """A real-format Speech Commands tree with two training clips of `yes`: a 1 s one and a
    0.75 s one (the real data set has clips shorter than 1 s); returns its base folder."""
    import numpy as np

    from suite.fakedata import write_speech_commands, write_wav

    base = write_speech_commands(root, labels=("yes",), clips_per_label=2)  # spk01 is for testing
    short = np.arange(int(0.75 * SAMPLE_RATE)) / SAMPLE_RATE
    write_wav(base / "yes" / "spk02_nohash_0.wav", 0.3 * np.sin(2 * np.pi * 300 * short))
    return base


def _input_shapes_assuming_article_clip_length(root: Path) -> list[tuple[int, ...]]:
    """The speech model's input shapes when each clip is taken to be 0.2 s long, as the
    article says: read with torchaudio's SPEECHCOMMANDS, fixed to 0.2 s x 16 kHz = 3200
    samples, through the model's own MFCC front end."""
    from torchaudio.datasets import SPEECHCOMMANDS

    from suite.data import fix_length

    _speech_clips(root)
    frontend = _spec("speech_cnn").frontend()
    clips = SPEECHCOMMANDS(str(root), url="speech_commands_v0.01", subset="training", download=False)
    return sorted({tuple(frontend(fix_length(clips[n][0], int(0.2 * SAMPLE_RATE))).shape)
                   for n in range(len(clips))})


def _input_shapes_from_the_suites_loader(root: Path) -> list[tuple[int, ...]]:
    """The speech model's input shapes from suite.data.speech_commands, which fixes each clip
    to 1 s before the same front end."""
    from suite.data import speech_commands

    _speech_clips(root)
    data = speech_commands(root, frontend=_spec("speech_cnn").frontend())
    if len(data) != 2:  # the 1 s and the 0.75 s clip, or the padding goes unseen
        raise RuntimeError(f"expected the 2 training clips written, the loader found {len(data)}")
    return sorted({tuple(data[n][0].shape) for n in range(len(data))})


def _not_the_speech_models_input(shapes: list[tuple[int, ...]]) -> bool:
    return shapes != [_spec("speech_cnn").input_shape]  # (1, 10, 10): 10 MFCCs x 10 frames


def _what_records_the_graph(make_leaf: Callable[[], torch.Tensor]):
    """(the leaf's class, out.grad_fn's class name, the leaf's gradient) for out = (3 * leaf).sum()."""
    leaf = make_leaf()
    out = (3 * leaf).sum()
    out.backward()
    return (type(leaf), type(out.grad_fn).__name__ if out.grad_fn is not None else None,
            None if leaf.grad is None else leaf.grad.tolist())


CASES: Registry[Defect] = Registry("defect")

CASES.add(Defect(
    name="mnist_fc1_input_size",
    models=("mnist_cnn",),
    article_says="fc1 = nn.Linear(64 * 6 * 6, 128), fed 28x28 MNIST images",
    problem="two 3x3 convolutions and a 2x2 pool turn 28x28 into 64x12x12 = 9216 features; "
            "64*6*6 only fits a 16x16 input, so the forward pass fails",
    correction="fc1 = nn.Linear(9216, 128), as in pytorch/examples' MNIST, which the article copies",
    literal=lambda tmp: source_article.ArticleMnistNet()(_mnist_batch(tmp)),
    corrected=lambda tmp: _spec("mnist_cnn").build()(_mnist_batch(tmp)),
    raises=RuntimeError, match="shapes cannot be multiplied",
))

CASES.add(Defect(
    name="mnist_net_recreated_each_step",
    models=("mnist_cnn",),
    article_says="optimizer = optim.SGD(Net().parameters(), ...); outputs = Net()(images)",
    problem="a new random Net is built for the optimizer and another at every step, so the "
            "optimizer updates a model that is never evaluated and nothing is trained",
    correction="build the model once, hand its parameters to the optimizer, evaluate that model",
    literal=_literal_loop,
    corrected=_corrected_loop,
    symptom=_loss_did_not_fall,
))

CASES.add(Defect(
    name="mnist_no_totensor",
    models=("mnist_cnn",),
    article_says="torchvision.datasets.MNIST(root='./data', train=True, download=True) with no transform",
    problem="without a transform the dataset yields PIL images, which the DataLoader cannot batch",
    correction="transforms.Compose([ToTensor(), Normalize((0.1307,), (0.3081,))]) (suite.data.mnist)",
    literal=lambda tmp: _first_mnist_batch(tmp, transform=None),
    corrected=lambda tmp: _first_mnist_batch(tmp, transform=_mnist_transform()),
    raises=TypeError, match="PIL",
))

CASES.add(Defect(
    name="cross_entropy_loss_missing",
    models=("cifar10_lenet", "speech_cnn"),
    article_says="loss = nn.functional.cross_entropy_loss(outputs, labels)",
    problem="torch.nn.functional has no cross_entropy_loss",
    correction="nn.functional.cross_entropy",
    literal=lambda tmp: torch.nn.functional.cross_entropy_loss(torch.zeros(2, 10), torch.zeros(2, dtype=torch.long)),
    corrected=lambda tmp: F.cross_entropy(torch.zeros(2, 10), torch.zeros(2, dtype=torch.long)),
    raises=AttributeError, match="cross_entropy_loss",
))

CASES.add(Defect(
    name="speech_fc1_needs_10x10",
    models=("speech_cnn",),
    article_says="raw clip -> x.unsqueeze(0).unsqueeze(0) -> conv1, conv2 (no pooling) -> fc1(64*6*6)",
    problem="with no pooling, fc1's 64*6*6 inputs need a 10x10 feature map; a raw clip is a "
            "1 x samples row that a 3x3 convolution cannot even slide over",
    correction="an MFCC front end (torchaudio) turns the 1 s clip into a 1x10x10 map: 10 "
               "coefficients x 10 frames of 100 ms; the network stays as written",
    literal=lambda tmp: source_article.ArticleSpeechNet()(source_article.article_speech_clip()),
    corrected=_speech_features,
    raises=RuntimeError, match="[Kk]ernel size",
))

CASES.add(Defect(
    name="speech_clip_length",
    models=("speech_cnn",),
    article_says="clips are 0.2 s at 16000 Hz; 65000 clips of 30 commands",
    problem="Speech Commands clips are 1 s (16000 samples), not 0.2 s; v0.01 has 30 words "
            "(v0.02 has 35)",
    correction="clips are padded or cut to 16000 samples; labels follow v0.01's 30 words",
    # Taken at its word (3200 samples a clip), the article gives the front end 2 frames, not
    # the 10 the network needs; the suite's loader gives (1, 10, 10) for 1 s and shorter clips.
    literal=_input_shapes_assuming_article_clip_length,
    corrected=_input_shapes_from_the_suites_loader,
    symptom=_not_the_speech_models_input,
))

CASES.add(Defect(
    name="librosa_calls_missing",
    models=("speech_cnn",),
    article_says="librosa.util.sample_rate.resample(...), librosa.util.util.normalize / "
                  "trim_silence / fix_silence",
    problem="librosa has no util.sample_rate or util.util modules, and librosa.load reads a "
            "file, not a directory",
    correction="torchaudio's SPEECHCOMMANDS dataset and transforms (suite.data.speech_commands)",
    literal=_article_librosa_call,
    corrected=_speech_features,
    raises=AttributeError, match="sample_rate",
))

CASES.add(Defect(
    name="variable_deprecated",
    models=(),
    article_says="torch.autograd.Variable is the class that records grad_fn",
    problem="Variable has been a deprecated alias since PyTorch 0.4: it returns a plain Tensor, "
            "and tensors carry requires_grad and grad_fn themselves",
    correction="no Variable anywhere; tensors with requires_grad=True",
    # Variable hands back a plain Tensor: it is no class of its own that could record grad_fn.
    literal=lambda tmp: _what_records_the_graph(
        lambda: torch.autograd.Variable(torch.ones(2), requires_grad=True)),
    corrected=lambda tmp: _what_records_the_graph(lambda: torch.ones(2, requires_grad=True)),
    symptom=lambda observed: observed[0] is torch.Tensor,
    # The article's code runs either way, so the correction cannot be told by the symptom's
    # absence: a plain tensor must record the graph and receive the gradient by itself.
    works=lambda observed: observed == (torch.Tensor, "SumBackward0", [3.0, 3.0]),
))
