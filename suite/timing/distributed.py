"""The DDP setups: every rank times its own DDP train step with the same measurement loop.

The processes come from the suite's reusable worker pool (suite.distributed.pool), so a run
over many models spawns its process group once per world size, not once per model.
"""
from __future__ import annotations

import torch

from suite.cases.models import CASES as MODELS
from suite.cases.models import ModelSpec
from suite.devices import default_backend
from suite.errors import SuiteError
from suite.threads import torch_threads
from suite.timing.figure import measure_figure
from suite.timing.memory import peak_bytes, reset_peak
from suite.timing.options import TimingOptions
from suite.timing.record import ProcessMeasurement
from suite.timing.settings import current_settings
from suite.timing.steps import build_step

# Spawning, model building and warm-up come on top of the timed part; each attempt may wait
# for quiet, settle, and then sample up to twice the time cap, the hard one (and one block more).
TIMEOUT_FIXED_S = 120.0


def time_ddp(spec: ModelSpec, options: TimingOptions) -> ProcessMeasurement:
    """Rank 0's measurement of a DDP run over options.world_size processes."""
    try:
        from suite.distributed.pool import get_pool
    except ImportError as err:
        raise SuiteError(f"setup {options.setup!r} needs suite.distributed.pool: {err}") from err
    pool = get_pool(options.world_size, backend=default_backend(options.device), device=options.device)
    # A registered model travels by name; an ad-hoc spec must be picklable itself.
    spec_ref = spec.name if spec.name in MODELS and MODELS.get(spec.name) is spec else spec
    timeout = TIMEOUT_FIXED_S + options.attempts * (options.quiet_budget_s + 3 * options.time_cap_s)
    per_rank = pool.run(time_ddp_rank, spec_ref, options, timeout=timeout)
    return per_rank[0]


def time_ddp_rank(rank: int, world_size: int, spec_ref, options: TimingOptions) -> ProcessMeasurement:
    """Runs in every worker, inside its initialised process group (the pool's contract); the
    pool pickles `options` and the answer, both frozen dataclasses."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    spec = MODELS.get(spec_ref) if isinstance(spec_ref, str) else spec_ref
    if options.device == "cuda":
        # One GPU per rank; syncing only its own keeps other GPUs free of this rank's context.
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
        wrap = lambda model: DistributedDataParallel(model, device_ids=[rank])  # noqa: E731
    else:
        device = torch.device("cpu")
        wrap = DistributedDataParallel

    def slowest_rank(value: float) -> float:
        shared = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        return float(shared.item())

    with torch_threads(options.threads):
        step = build_step(spec, options.mode, device, options.batch_size,
                          dtype=options.dtype, channels_last=options.channels_last, wrap=wrap)
        reset_peak([device])
        sampling, trust = measure_figure(step, options=options, devices=[device], agree=slowest_rank)
        return ProcessMeasurement(sampling, trust, *peak_bytes([device]), current_settings())
