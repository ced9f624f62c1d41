"""torchsuite: is this machine's PyTorch stack correct, and how fast is it?

The public checkers are imported lazily, so `import suite` (and the pytest plugin) stays cheap.
"""

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "check_function": "suite.conformance.functions.check",
    "assert_function_conforms": "suite.conformance.functions.check",
    "check_ddp_equivalence": "suite.conformance.parallel.equivalence",
    "check_fsdp_equivalence": "suite.conformance.parallel.equivalence",
    "check_compile": "suite.conformance.compile.check",
    "check_ops": "suite.conformance.ops.check",
    "check_resume": "suite.conformance.parallel.resume",
    "time_model": "suite.timing.core",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'suite' has no attribute {name!r}")
