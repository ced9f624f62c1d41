"""The timing setups by name: how many processes and devices one iteration uses, and whether
the model runs compiled. Free of torch, so that the report can read them."""

# setup -> device kind it runs on
SETUP_DEVICE = {
    "cpu": "cpu",
    "cpu-ddp": "cpu",
    "cuda": "cuda",
    "cuda-ddp": "cuda",
    "dataparallel": "cuda",
    "cpu-compile": "cpu",  # one process, the model under torch.compile (suite.timing.compiled)
    "cuda-compile": "cuda",
}
SETUPS = tuple(SETUP_DEVICE)
DDP_SETUPS = ("cpu-ddp", "cuda-ddp")
COMPILE_SETUPS = ("cpu-compile", "cuda-compile")
ONE_DEVICE_SETUPS = ("cpu", "cuda", *COMPILE_SETUPS)
DEFAULT_COMPILE_BACKEND = "inductor"  # what the compile setups compile with unless told otherwise
