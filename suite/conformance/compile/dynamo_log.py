"""What dynamo did while a check ran, read from dynamo's own records, for every checker that compiles.

    with watch_dynamo() as seen:
        compiled(x)
    seen.graphs, seen.recompiles, seen.gave_up, seen.not_compiled_reason()

torch 2.11 keeps three records, none of them public API (hence one module reads them all):
- `counters["stats"]["unique_graphs"]`: one per graph dynamo hands its backend;
- the compilation metrics (`torch._dynamo.utils.get_compilation_metrics()`): one per frame
  compile, whose `recompile_reason` is the guard that failed (dynamo's own words, as
  TORCH_LOGS=recompiles prints them) and whose `fail_reason` says why it gave up on a frame;
- `counters["unimplemented"]` and `counters["graph_break"]`: why code ran eagerly (graph breaks).

A check that compiles nothing is the trap these serve: `torch.compile` of an `nn.LSTM` runs it
eagerly, without a word, and the compiled model then "equals" eager because it is eager.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class DynamoLog:
    graphs: int = 0  # graphs dynamo handed the backend (graph breaks and recompiles each add one)
    recompiles: list[str] = field(default_factory=list)  # one per recompile: the guard that failed
    gave_up: list[str] = field(default_factory=list)  # distinct reasons code ran eagerly, first line each

    def not_compiled_reason(self) -> str:
        """Why the backend received no graph, in one line."""
        why = "; ".join(self.gave_up[:2]) if self.gave_up else \
            "dynamo traced no code of the model's own (it starts graphs in user code, not torch's modules)"
        return f"the backend received no graph: {why}"

    def recompile_text(self) -> str:
        """"2 recompile(s): 0/0: tensor 'x' size mismatch at index 0. expected 8, actual 4; ..." """
        if not self.recompiles:
            return "no recompile"
        return f"{len(self.recompiles)} recompile(s): {'; '.join(self.recompiles[:3])}"


def _first_line(text) -> str:
    return (str(text).strip().splitlines() or [""])[0][:200]


def _break_reasons(counters) -> Counter:
    return Counter(counters["unimplemented"]) + Counter(counters["graph_break"])


@contextlib.contextmanager
def watch_dynamo():
    """Fill a DynamoLog with what dynamo compiled inside the block. Clears dynamo's compilation
    metrics first (a bounded global queue, 64 entries): callers reset dynamo anyway."""
    from torch._dynamo.utils import clear_compilation_metrics, counters, get_compilation_metrics

    log = DynamoLog()
    graphs, breaks = counters["stats"]["unique_graphs"], _break_reasons(counters)
    clear_compilation_metrics()
    try:
        yield log
    finally:
        log.graphs = counters["stats"]["unique_graphs"] - graphs
        frames = [m for m in get_compilation_metrics() if m.co_name]  # frame compiles, not AOT's backward
        log.recompiles = [_first_line(m.recompile_reason) for m in frames if m.recompile_reason]
        reasons = [m.fail_reason for m in frames if m.fail_reason] + list(_break_reasons(counters) - breaks)
        log.gave_up = list(dict.fromkeys(_first_line(r) for r in reasons))
