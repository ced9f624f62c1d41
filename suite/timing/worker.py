"""`python -m suite.timing.worker`: time figures in this fresh interpreter and print their records.

Reads one JSON object on stdin, {"requests": [{"model", "mode", "kwargs"}, ...]} (or, for a
user's benchmark function, {"function": "module:function", "kwargs"}), times them in order with
time_model (time_function) and writes one JSON line per request to stdout as soon as it is done:
{"index": i, "record": {...}} or {"index": i, "error": "one line", "traceback": "..."}. Nothing
else goes to stdout (Python's own prints are sent to stderr), so that the parent can read it
line by line. A DDP figure's pool lives until the next request needs another one.
"""
from __future__ import annotations

import json
import sys
import traceback


def pool_key(request: dict) -> tuple | None:
    """The worker pool a request runs on (setup, world size), or None for one-process setups."""
    kwargs = request["kwargs"]
    return (kwargs["setup"], kwargs.get("world_size")) if str(kwargs.get("setup", "")).endswith("-ddp") else None


def time_request(request: dict) -> dict:
    """A registered model's figure ({"model", "mode", "kwargs"}) or a user's function's
    ({"function": "module:function", "kwargs"}: suite.timing.function)."""
    if "function" in request:
        from suite.timing.function import time_function

        return time_function(request["function"], **request["kwargs"])
    from suite.timing.core import time_model

    return time_model(request["model"], mode=request["mode"], **request["kwargs"])


# The run's own calibrations (suite.runner), measured up front on a quiet machine: a worker uses
# them instead of measuring its own beside whatever else the machine is doing by then.
PEAKS_ENV = "TORCHSUITE_PEAKS"


def seed_peaks() -> None:
    import os

    from suite.timing.peak import seed_cache

    given = json.loads(os.environ.get(PEAKS_ENV) or "{}")
    for calibration in given.get("peaks", []):
        seed_cache(calibration, quick=given.get("quick", False))


def main() -> int:
    import faulthandler

    from suite.isolation import import_user_modules

    protocol = sys.stdout
    sys.stdout = sys.stderr
    faulthandler.enable(file=2, all_threads=False)  # a fatal signal leaves its Python stack for the crash record
    import_user_modules()
    from suite.distributed.pool import close_shared_pools
    from suite.errors import one_line
    from suite.results import json_ready

    seed_peaks()
    requests = json.load(sys.stdin)["requests"]
    try:
        for index, request in enumerate(requests):
            try:
                answer = {"record": time_request(request)}
            except Exception as err:  # one broken figure is an answer, not the end of the round
                answer = {"error": one_line(err), "traceback": traceback.format_exc()}
            following = requests[index + 1] if index + 1 < len(requests) else None
            if pool_key(request) is not None and (following is None or pool_key(following) != pool_key(request)):
                close_shared_pools()
            protocol.write(json.dumps(json_ready({"index": index, **answer}), allow_nan=False) + "\n")
            protocol.flush()
    finally:
        close_shared_pools()
        sys.stdout = protocol
    return 0


if __name__ == "__main__":
    sys.exit(main())
