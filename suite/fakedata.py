"""Write tiny datasets in the real on-disk formats, for tests and for the defect demonstrations.

It ships in the package, not in tests/, because the defect registry (suite/cases/defects.py)
feeds these files to the real loaders to show the article's loader defects.

The files are what the real archives unpack to (MNIST idx, CIFAR-10 python batches, a Speech
Commands folder of 16-bit PCM wav files), so the real torchvision/torchaudio loaders read them.
"""
from __future__ import annotations

import hashlib
import pickle
import struct
import wave
from pathlib import Path

import numpy as np

from suite.cases.models import SAMPLE_RATE


def _idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = struct.pack(">" + "i" * (1 + array.ndim), magic, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", 2051, rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, np.arange(n) % 10)
    return raw


def write_cifar10(root, n_per_batch: int = 4, seed: int = 0) -> dict[str, str]:
    """Writes the six batches and the meta file; returns each file's MD5 (torchvision checks them)."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in np.arange(n_per_batch) % 10]}
        (folder / name).write_bytes(pickle.dumps(batch))
    labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": labels}))
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest()
            for name in names + ["batches.meta"]}


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    pcm = np.clip(samples * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def write_speech_commands(root, labels=("yes", "no", "up"), clips_per_label: int = 3,
                          seconds: float = 1.0, version: str = "speech_commands_v0.01",
                          seed: int = 0) -> Path:
    """A Speech Commands tree: <label>/<speaker>_nohash_<n>.wav, with the last clip of each
    label listed in testing_list.txt. Each label is a tone of its own pitch plus noise."""
    base = Path(root) / "SpeechCommands" / version
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    testing = []
    for k, label in enumerate(labels):
        (base / label).mkdir(parents=True, exist_ok=True)
        for n in range(clips_per_label):
            name = f"{label}/spk{n:02d}_nohash_0.wav"
            tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * k) * t)
            write_wav(base / name, tone + 0.01 * rng.standard_normal(t.size))
            if n == clips_per_label - 1:
                testing.append(name)
    (base / "testing_list.txt").write_text("\n".join(testing) + "\n")
    (base / "validation_list.txt").write_text("")
    return base
