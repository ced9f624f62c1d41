"""check_function over PyTorch's own corpus of custom Functions, with the corpus's own samples.

The expected verdicts are data in suite/cases/function_corpus.py: the defects it finds, the
surrogates it must accept once declared, and every other Function conforming.
"""
import pytest

from suite.cases.expect import FAILS, NOT_COMPILED, checks_with, describe
from suite.cases.function_corpus import CORPUS_MODULE, EXPECTED, corpus, import_corpus
from suite.conformance.functions.check import check_function

# torch's private test module; it imports expecttest and hypothesis, which may be missing.
try:
    import_corpus()
except ImportError as missing:
    pytest.skip(f"{CORPUS_MODULE} cannot be imported: {missing}", allow_module_level=True)

SAMPLES = list(corpus())
SURROGATES = [(fn, args) for fn, args in SAMPLES if EXPECTED[fn.__name__].is_surrogate]


def _name(sample):
    return sample[0].__name__


def test_every_function_of_the_corpus_has_a_declared_verdict():
    assert {fn.__name__ for fn, _ in SAMPLES} == set(EXPECTED)


@pytest.mark.parametrize("sample", SAMPLES, ids=_name)
def test_the_corpus_gets_its_declared_verdict(sample):
    fn, args = sample
    expected = EXPECTED[fn.__name__]
    report = check_function(fn, args)
    failing = checks_with(expected.expect, FAILS)
    assert sorted(report.failures()) == sorted(failing), f"{describe(expected.expect)}\n{report}"
    assert report.not_compiled() == list(checks_with(expected.expect, NOT_COMPILED)), f"\n{report}"
    for name in failing:  # a gradient error says by how much, not only that it raised
        assert "raised" not in report.check(name).detail and any(ch.isdigit() for ch in report.check(name).detail)


@pytest.mark.parametrize("sample", SURROGATES, ids=_name)
def test_a_surrogate_passes_once_its_gradient_is_declared(sample):
    fn, args = sample
    report = check_function(fn, args, backward_reference=EXPECTED[fn.__name__].backward_reference)
    assert report.failures() == [] and report.not_compiled() == ["compile"], f"\n{report}"
    assert report.check("backward_reference").verdict == "pass"
    assert report.check("gradcheck").verdict == "skip"
    # the other checks still run: the jvp against the declaration, vmap, reentrancy, double backward
    assert {c.name for c in report.checks if c.verdict == "pass"} >= {
        "forward_ad", "vmap", "reentrant", "gradgradcheck", "grad_per_input"}


@pytest.mark.parametrize("sample", SURROGATES, ids=_name)
def test_a_wrong_declaration_fails(sample):
    fn, args = sample
    report = check_function(fn, args, backward_reference=EXPECTED[fn.__name__].wrong_backward_reference)
    assert {"backward_reference", "forward_ad"} <= set(report.failures()), f"\n{report}"
    assert "differs from backward_reference" in report.check("backward_reference").detail
