"""Conformance checkers, one subpackage per thing they check.

    autograd/    gradients of the registered ops and models against finite differences, the
                 jacobian helpers, and the source article's chain-rule claim
    functions/   check_function: the checks a custom torch.autograd.Function must pass
    parallel/    DDP and DataParallel trained side by side with one process on the whole batch

Each checker returns results with `.passed`; suite/conformance/sources.py lists the ones that
`torchsuite run` consumes.
"""
