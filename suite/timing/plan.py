"""What a full timing run covers: setups per device, batch-size sweeps, scaling efficiency."""
from __future__ import annotations

import importlib.util
from typing import Iterator, NamedTuple

from suite.cases.models import CASES as MODELS, models_for
from suite.cases.variants import CASES as VARIANT_CASES, SERVE, TimingVariant
from suite.devices import missing_reason, require_device
from suite.threads import usable_cores
from suite.timing.scaling import REFERENCE_SETUP, efficiency, reference_key


VARIANTS = tuple(VARIANT_CASES)
VARIANT_BY_ID = {v.id: v for v in VARIANTS}


def variant_skip_reason(variant: TimingVariant) -> str | None:
    """Why `variant` cannot run here (absent hardware or process pool), or None."""
    reason = missing_reason(variant.device, variant.devices_needed)
    if reason is None and variant.distributed:
        reason = _pool_missing_reason()
    if reason is None and usable_cores() < variant.min_cores:
        reason = f"needs {variant.min_cores} CPU cores; this process may use {usable_cores()}"
    return reason


class TimingCase(NamedTuple):
    """One time_model call of a run; skip_reason is set when its hardware is absent."""

    model: str
    mode: str
    kwargs: dict
    skip_reason: str | None = None

    @property
    def id(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in self.kwargs.items() if k not in ("quick",))
        return f"{self.model}/{self.mode}/{options}"

    def time(self) -> dict:
        from suite.timing.core import time_model

        return time_model(self.model, mode=self.mode, **self.kwargs)


def thread_counts(cores: int) -> list[int]:
    """1, 2, 4, ... up to the core count, and the core count itself."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


def variant_applies(variant: TimingVariant, spec) -> bool:
    """Whether `variant` means anything for the model: channels_last needs image inputs."""
    return not variant.kwargs.get("channels_last") or spec.image_input


def modes_for(variant: TimingVariant, spec) -> tuple[str, ...]:
    """The variant's modes that the model is timed in: serving for the models people serve."""
    return tuple(mode for mode in variant.modes if mode != SERVE or spec.serving)


def iter_setups(devices: list[str], quick: bool = False,
                models: list[str] | None = None) -> Iterator[TimingCase]:
    """Every (model, mode, time_model kwargs) a run over `devices` ("cpu", "cuda") should time.

    The VARIANTS of each requested device that apply to the model, for each of `models` (by
    default the models a run times on that device: suite.cases.models.models_for) and each
    variant's modes. Full runs also sweep CPU threads (1, 2, 4, ... all cores) and CPU DDP world sizes
    (2, 4, ... all cores): 8 of each, not 128, on a 128-core server; quick runs take all cores, world size 2 and fp32 on GPUs. Cases whose
    hardware is absent (several GPUs, say) come with a skip_reason; a requested device kind
    that is absent raises DeviceUnavailableError.
    """
    for kind in devices:
        require_device(kind)
    cores = usable_cores()
    names = models if models is not None else list(dict.fromkeys(n for kind in devices for n in models_for(kind)))
    for spec in MODELS.select(names):
        for variant in VARIANTS:
            if variant.device not in devices or (quick and not variant.quick) or not variant_applies(variant, spec):
                continue
            if models is None and spec.name not in models_for(variant.device):
                continue
            reason = variant_skip_reason(variant)
            for kwargs in _expand(variant, cores, quick):
                for mode in modes_for(variant, spec):
                    yield TimingCase(spec.name, mode, {**kwargs, "quick": quick}, reason)


def _expand(variant: TimingVariant, cores: int, quick: bool) -> list[dict]:
    if quick or not variant.sweep:
        return [dict(variant.kwargs)]
    # one thread per rank: every world size up to the core count fits in the cores
    counts = [n for n in thread_counts(max(cores, variant.min_cores)) if n >= variant.min_cores]
    return [{**variant.kwargs, variant.sweep: n} for n in counts]


def _pool_missing_reason() -> str | None:
    if importlib.util.find_spec("suite.distributed.pool") is None:
        return "suite.distributed.pool (the DDP process pool) is not installed"
    return None


def sweep_batch_sizes(model: str, batch_sizes: list[int] | None = None, **kwargs) -> Iterator[dict]:
    """time_model records for several batch sizes (default: 1/4x to 4x the registry's)."""
    from suite.timing.core import time_model
    from suite.timing.options import SETUP_DEVICE

    if batch_sizes is None:
        kind = SETUP_DEVICE[kwargs["setup"]] if kwargs.get("setup") else kwargs.get("device") or "cpu"
        default = MODELS.get(model).batch_size(kind)
        batch_sizes = sorted({max(1, default // 4), max(1, default // 2), default, default * 2, default * 4})
    for batch_size in batch_sizes:
        yield time_model(model, batch_size=batch_size, **kwargs)


def attach_scaling_efficiency(records: list[dict]) -> list[dict]:
    """Set scaling_efficiency (suite.timing.scaling) on multi-device records that have a reference
    in `records`; the others keep None. Returns the records, changed in place."""
    references = {reference_key(r): r["throughput"] for r in records if r["setup"] in ("cpu", "cuda")}
    for record in records:
        if record["setup"] in REFERENCE_SETUP:
            record["scaling_efficiency"] = efficiency(record["throughput"], record["world_size"],
                                                      references.get(reference_key(record)))
    return records
