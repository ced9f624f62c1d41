"""One run to a target: train, evaluate on the held-out split at each checkpoint, stop at the target or the cap.

As in MLPerf, the clock starts at the first batch and runs through every evaluation; what comes
before (building the model, reading the held-out split) is outside it. A run that reaches its
cap without the target is not converged and has no time to target.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import torch

from suite.devices import synchronize


def accuracy(learner, batches: Iterable, device: torch.device) -> float:
    """Top-1 accuracy of `learner.predict` over held-out (inputs, labels) batches."""
    correct = total = 0
    for inputs, labels in batches:
        labels = labels.to(device)
        correct += (learner.predict(inputs.to(device)).argmax(1) == labels).sum().item()
        total += labels.numel()
    return correct / total if total else 0.0


def run_to_target(learner, epochs: Iterable[Iterable], heldout: Callable[[], Iterable], *,
                  device: torch.device, target: float, eval_every: int | None = None,
                  max_steps: int | None = None, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Train `learner` on `epochs` (an iterable of epochs, each an iterable of batches; the cap on
    epochs is the caller's) until held-out accuracy reaches `target`.

    Evaluates every `eval_every` steps, or at the end of each epoch when it is None; stops at
    `max_steps` when given. Returns the run's outcome and its curve: at each checkpoint the step,
    epoch, seconds since the first batch, mean training loss since the previous checkpoint, and
    held-out accuracy.
    """
    curve: list[dict] = []
    losses: list[torch.Tensor] = []
    step = epoch = 0
    reached = None
    start = clock()

    def checkpoint() -> bool:
        nonlocal reached
        mean_loss = torch.stack(losses).mean().item() if losses else None
        losses.clear()
        acc = accuracy(learner, heldout(), device)
        synchronize(device)
        curve.append({"step": step, "epoch": epoch, "elapsed_s": clock() - start, "loss": mean_loss,
                      "accuracy": acc})
        if acc >= target:
            reached = curve[-1]
        return reached is not None

    stop = False
    for epoch_batches in epochs:
        epoch += 1
        for inputs, labels in epoch_batches:
            losses.append(learner.step(inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)))
            step += 1
            at_cap = max_steps is not None and step >= max_steps
            if eval_every and (step % eval_every == 0 or at_cap):
                stop = checkpoint()
            if stop or at_cap:
                stop = True
                break
        if not eval_every and checkpoint():
            stop = True
        if stop:
            break
    if not curve or curve[-1]["step"] != step:  # the cap fell between checkpoints: say where it ended
        checkpoint()
    return {
        "converged": reached is not None,
        "time_to_target_s": reached["elapsed_s"] if reached else None,
        "steps_to_target": reached["step"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        "final_accuracy": curve[-1]["accuracy"],
        "steps_run": step,
        "epochs_run": epoch,
        "stopped_after_s": curve[-1]["elapsed_s"],
        "loss_curve": curve,
    }
