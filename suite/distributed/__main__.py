"""torchrun entry: run the parallel registry's cases (DDP and FSDP2) across machines and print a verdict each.

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m suite.distributed --device cuda

Each process joins the group torchrun describes in its environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Without --cases, one case per configuration runs at
the launched world size (the variant declared at that size when there is one). The first
process of each node prints one line per case; every rank exits 1 when any verdict is not the
expected one.

Two nodes (here both on one machine; on two, give each the other's reachable host name):

    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:29400 \
        -m suite.distributed --cases mlp_sgd_momentum_w2,fsdp_mlp_w2     # once per node
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m suite.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated parallel case names (default: one per configuration)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--backend", default=None, help="default: gloo on cpu, nccl on cuda")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds any collective may wait")
    return parser.parse_args(argv)


def select_cases(names: str | None, world_size: int, device: str) -> list:
    """The named cases, or one per family: the variant declared at world_size, else the first."""
    from suite.cases.parallel import CASES

    if names:
        return CASES.select([n.strip() for n in names.split(",") if n.strip()])
    chosen: dict[str, object] = {}
    for case in CASES:
        if case.devices_needed and (device != "cuda" or world_size < case.devices_needed) or not case.runs_at(world_size):
            continue
        family = case.family or case.name
        if family not in chosen or (case.world_size == world_size != chosen[family].world_size):
            chosen[family] = case
    return list(chosen.values())


def verdict_lines(rank: int, world_size: int, names: str | None, device: str, backend: str
                  ) -> list[tuple[bool, str]]:
    """Run the selected cases in the current group; on rank 0, (as expected?, line) per case.

    Module-level with the pool's signature, so the same code runs under torchrun and in a
    WorkerPool.
    """
    import torch.distributed as dist

    from suite.conformance.parallel.equivalence import build_report, case_job, judge, rank_loop

    lines = []
    for case in select_cases(names, world_size, device):
        job = case_job(case, world_size, device)
        outcome = rank_loop(job)(rank, world_size, job)
        outcomes = [None] * world_size if rank == 0 else None
        dist.gather_object(outcome, outcomes, dst=0)
        if rank == 0:
            ok, detail = judge(case, build_report(outcomes, world_size=world_size, steps=case.steps,
                                                  backend=backend, device=device,
                                                  tolerance=(case.rtol, case.atol)))
            lines.append((ok, f"{'PASS' if ok else 'FAIL'} {case.name} (world size {world_size}): {detail}"))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch
    import torch.distributed as dist

    from suite.devices import default_backend

    if not {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
        print("python -m suite.distributed: error: launch it with torchrun, which sets RANK, "
              "WORLD_SIZE, MASTER_ADDR and MASTER_PORT", file=sys.stderr)
        return 2
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    from suite.errors import SuiteError

    try:  # a misspelt name is one line from each process, before any group is joined
        select_cases(args.cases, world_size, args.device)
    except SuiteError as error:
        print(f"python -m suite.distributed: error: {error}", file=sys.stderr)
        return 2
    backend = args.backend or default_backend(args.device)
    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, init_method="env://",
                            timeout=datetime.timedelta(seconds=args.timeout))
    try:
        shared = [verdict_lines(rank, world_size, args.cases, args.device, backend)]
        # Rank 0's verdicts reach every rank: the first process of each node prints them (so a
        # log on every machine shows them), and every rank exits with them, so that torchrun's
        # own status says it too.
        dist.broadcast_object_list(shared, src=0)
        if os.environ.get("LOCAL_RANK", "0") == "0":
            node = os.environ.get("GROUP_RANK", "0")
            for _, line in shared[0]:
                print(f"{line} [node {node}]", flush=True)
        # Every rank is done with the group before any tears it down: a destroy racing a peer
        # still in its last collective is a known cause of torchrun jobs that hang at exit
        # (pytorch/pytorch#75097), as one was seen to here after printing every verdict.
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    # Every verdict is out and every rank is past its last collective. Tearing gloo down
    # (destroy_process_group, then its threads at interpreter exit) was seen to hang here in about
    # one launch in four, even after the barrier: exit at once instead; the OS closes the sockets.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if any(not ok for ok, _ in shared[0]) else 0)


if __name__ == "__main__":
    sys.exit(main())
