"""The bridge to OpInfo: PyTorch's own database of operators, as the suite's op cases.

`torch.testing._internal.common_methods_invocations.op_db` describes about 700 operators (697
OpInfos in torch 2.11, variants included): how to make sample inputs, which dtypes each device
supports, whether autograd applies, and, in DecorateInfo entries scoped to a test class, test,
device and dtype, the tests each op is known to fail or must skip and the tolerances it needs.
It is torch's private test module (it needs expecttest and hypothesis) and is imported only when
a case is asked for, through suite.cases.torch_testing, which undoes the import's global state.

The suite checks each op with two checks (suite.conformance.ops): `forward` (the op in a dtype
against float64) and `backward` (a vector-Jacobian product against float64). OpInfo's
declarations are for its own tests, so each check reads those of the tests that check the same
thing, `OPINFO_TESTS`: a skip there becomes an Expect NOT_APPLICABLE, an expected failure an
Expect FAILS, a toleranceOverride or precisionOverride the op's own tolerance. What the suite
itself found about an op beyond OpInfo's declarations is declared in `SUITE_DECLARATIONS`, each
with its reason (docs/found.md tells the findings).
"""
from __future__ import annotations

import difflib
import functools
import unittest
from dataclasses import dataclass

import torch

from suite.cases.expect import Expect, approximate, fails, not_applicable
from suite.cases.torch_testing import import_released
from suite.errors import UnknownCaseError

OP_DB_MODULE = "torch.testing._internal.common_methods_invocations"
# forward and backward call the op as a function; method, inplace and out call its other forms
# (x.op(...), x.op_(...), op(..., out=...)) where OpInfo declares them, judged as forward is.
VARIANT_CHECKS = ("method", "inplace", "out")
CHECKS = ("forward", "backward", *VARIANT_CHECKS)
# The floating dtypes a check can be run in; float64 is the reference and is never checked.
CHECKED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

SKIP, XFAIL, TOLERANCE = "skip", "expected failure", "tolerance"


@dataclass(frozen=True)
class OpInfoTest:
    """One of OpInfo's tests whose declarations speak for a check of the suite's, and which kinds
    of them do: a skip says the op cannot be compared that way at all (its output is random, say),
    an expected failure that the op's numbers are wrong in that test's comparison, a tolerance
    how close they can be."""

    cls: str
    test: str
    takes: tuple[str, ...] = (SKIP, XFAIL, TOLERANCE)
    cpu_takes: tuple[str, ...] | None = None  # what it says on the CPU, when that differs


# OpInfo's tests whose declarations speak for each check. A DecorateInfo naming the class alone
# (test None), or nothing at all, concerns every test of that class, so it counts too.
OPINFO_TESTS: dict[str, tuple[OpInfoTest, ...]] = {
    "forward": (
        # Device against CPU, same dtype; it does not run on the CPU itself, so there its expected
        # failures and tolerances (differences between a GPU and the CPU) say nothing, while its
        # skips (a random output) still hold.
        OpInfoTest("TestCommon", "test_compare_cpu", cpu_takes=(SKIP,)),
        # Against the op's NumPy reference; its expected failures are the reference's own
        # disagreements (memory formats, NumPy's promotion), not wrong numbers.
        OpInfoTest("TestCommon", "test_numpy_ref", takes=(SKIP, TOLERANCE)),
        # Against NumPy on ordinary values, in the low-precision dtypes too.
        OpInfoTest("TestUnaryUfuncs", "test_reference_numerics_normal"),
        OpInfoTest("TestBinaryUfuncs", "test_reference_numerics"),
        OpInfoTest("TestReductions", "test_ref_small_input"),
    ),
    "backward": (
        # gradcheck, which OpInfo runs in float64 only: its expected failures are finite
        # differences disagreeing with an analytic gradient, not a low-precision gradient
        # disagreeing with float64's; its skips (a gradient that is not defined) hold.
        OpInfoTest("TestBwdGradients", "test_fn_grad", takes=(SKIP,)),
    ),
    # PyTorch's own tests of the other forms check more than values (aliasing, warnings, an
    # out= of the wrong dtype): only their skips speak for these checks (of their expected
    # failures, 45 pass here; the two that do not are the suite's declarations).
    "method": (OpInfoTest("TestCommon", "test_variant_consistency_eager", takes=(SKIP,)),),
    "inplace": (OpInfoTest("TestCommon", "test_variant_consistency_eager", takes=(SKIP,)),),
    "out": (OpInfoTest("TestCommon", "test_out", takes=(SKIP,)),),
}
# Bare decorators (not in a DecorateInfo) apply to every test of the op: those that confine it
# to a device type, by name.
ONLY_ON = {"onlyCUDA": "cuda", "onlyCPU": "cpu"}


@dataclass(frozen=True)
class SuiteDeclaration:
    """What the suite declares about an op beyond OpInfo's own declarations."""

    expect: Expect
    dtypes: tuple[torch.dtype, ...] = ()  # () means every dtype
    devices: tuple[str, ...] = ()  # device types; () means every device

    def concerns(self, device: str, dtype: torch.dtype) -> bool:
        return (not self.dtypes or dtype in self.dtypes) and (not self.devices or device in self.devices)


F32, BF16, F16 = (torch.float32,), (torch.bfloat16,), (torch.float16,)
LOW = BF16 + F16


def _declare(why: str, expect=approximate, checks: tuple[str, ...] = (), dtypes=(), ops=()) -> dict:
    return {op: SuiteDeclaration(expect(*checks, why=why), tuple(dtypes)) for op in ops}


def _merge(*parts: dict) -> dict[str, tuple[SuiteDeclaration, ...]]:
    merged: dict[str, tuple[SuiteDeclaration, ...]] = {}
    for part in parts:
        for op, declared in part.items():
            merged[op] = merged.get(op, ()) + (declared,)
    return merged


# What the suite found by sweeping op_db on the CPU (torch 2.11.0) beyond OpInfo's declarations.
# APPROXIMATE: the error is the dtype's precision meeting an ill-conditioned computation, on some
# of OpInfo's samples: it is reported, not judged. FAILS: a defect (docs/found.md). Keyed by the
# case's name (OpInfo name, then ".variant" when it has one).
SUITE_DECLARATIONS: dict[str, tuple[SuiteDeclaration, ...]] = _merge(
    _declare("a defect of PyTorch: matrix_exp in bfloat16 and float16 on the CPU returns garbage, inf or "
             "NaN for matrices of norm above about 1 (docs/found.md)", fails, dtypes=LOW, ops=("matrix_exp",)),
    _declare("draws random numbers (the pooling regions): runs in two dtypes do not draw the same ones",
             not_applicable, ops=("randn", "nn.functional.fractional_max_pool2d",
                                  "nn.functional.fractional_max_pool3d")),
    _declare("its samples are views into a larger storage, at an offset; a copy into float64 keeps the "
             "values, not the storage the view reaches into", not_applicable, ops=("as_strided.partial_views",)),
    _declare("the bfloat16 CPU kernel computes the sampling coordinates in bfloat16, which rounds them "
             "to 1/4 pixel at 40 pixels (docs/found.md)", dtypes=LOW,
             ops=("grid_sampler_2d", "nn.functional.grid_sample")),
    _declare("a gradient that is zero, or nearly, in exact arithmetic is a cancellation of terms of the "
             "cotangent's size (a normalization's mean and variance): in a low precision it is their "
             "rounding", checks=("backward",), dtypes=F32 + LOW,
             ops=("native_layer_norm", "nn.functional.layer_norm", "native_batch_norm", "_native_batch_norm_legit",
                  "_batch_norm_with_update", "nn.functional.batch_norm", "nn.functional.group_norm",
                  "nn.functional.instance_norm", "nn.functional.cosine_similarity", "nn.functional.normalize",
                  "corrcoef", "cov", "softmax", "masked.softmax", "masked.softmin", "masked.logsumexp",
                  "nn.functional.gaussian_nll_loss", "addbmm")),
    _declare("one normalized element: x - mean is zero in exact arithmetic, and its rounding is multiplied "
             "by 1 / sqrt(eps) = 316", checks=("forward",), dtypes=LOW, ops=("native_layer_norm",)),
    _declare("OpInfo's samples include values near 1e4, where the output's rounding (64 in bfloat16) "
             "enters the gradient exp(x - output)", checks=("backward",), dtypes=F32 + LOW, ops=("logcumsumexp",)),
    _declare("covariance of values up to about 1e3: a sum of squares minus a square, cancellation in float32",
             checks=("forward",), dtypes=F32, ops=("cov",)),
    _declare("near a pole or a singularity (digamma near a negative integer, 1/(1 - x^2) near |x| = 1, "
             "repeated singular values) float32 loses digits however the kernel computes",
             checks=("forward",), dtypes=F32, ops=("polygamma.polygamma_n_0",
                                                    "special.polygamma.special_polygamma_n_0")),
    _declare("near a pole or a singularity (digamma near a negative integer, 1/(1 - x^2) near |x| = 1, "
             "close singular values or eigenvalues) float32 loses digits however the kernel computes",
             checks=("backward",), dtypes=F32,
             ops=("atanh", "digamma", "linalg.cond", "linalg.eigh", "linalg.svd", "svd",
                  "linalg.householder_product", "nn.functional.ctc_loss",
                  "nn.functional.scaled_dot_product_attention", "grid_sampler_2d")),
    _declare("bin edges computed in the dtype: a value on an edge can fall into the next bin",
             checks=("forward",), dtypes=F32 + LOW, ops=("histogram", "histc")),
    _declare("rounds a quotient to an integer: a quotient within the dtype's rounding of an integer "
             "can round onto it, and the result (or the gradient, -trunc(a / b) for fmod) jumps by 1", dtypes=LOW,
             ops=("div.trunc_rounding", "div.floor_rounding", "floor_divide", "remainder", "fmod")),
    _declare("a defect of PyTorch: with out= and a non-contiguous input the CPU kernel writes wrong values "
             "into all three outputs, save_mean from uninitialised memory (docs/found.md)", fails,
             checks=("out",), ops=("native_batch_norm", "_native_batch_norm_legit")),
    _declare("a defect of PyTorch: raises \"Unsupported memory format\" on a 4-d (unbatched) input whose strides "
             "are channels_last, a layout its contiguous copy and a permuted view reach too (docs/found.md)", fails,
             checks=("forward", "backward"), ops=("nn.functional.max_pool3d",)),
    _declare("a defect of PyTorch: the backward of a 4-d input in channels_last raises \"grad_input must be "
             "contiguous\" (docs/found.md)", fails, checks=("backward",), ops=("nn.functional.nll_loss",)),
    _declare("its out= form does not take the outputs the function returns (PyTorch's test_out expects it to "
             "fail)", not_applicable, checks=("out",), ops=("_batch_norm_with_update", "histogramdd", "nonzero")),
    _declare("a defect of PyTorch: with out= some samples come back wrong (garbage, NaN) where the function "
             "is right (PyTorch's test_out expects it to fail; docs/found.md)", fails, checks=("out",),
             dtypes=F32, ops=("fft.ihfft2", "fft.ihfftn")),
    _declare("float16 on the CPU: a reduction or a composite gradient rounds to 11 bits several times, a few "
             "times the 1e-3 rtol of one rounding", checks=("backward",), dtypes=F16,
             ops=("mul", "true_divide", "nn.functional.binary_cross_entropy_with_logits", "nn.functional.conv1d",
                  "nn.functional.scaled_dot_product_attention", "dist", "repeat", "xlogy", "logsumexp",
                  "nn.functional.cosine_embedding_loss", "nn.functional.poisson_nll_loss", "asin", "atanh",
                  "nn.functional.multi_head_attention_forward")),
    _declare("float16 on the CPU: a loss's reduction rounds to 11 bits at every partial sum, a few times the "
             "1e-3 rtol of one rounding", checks=("forward",), dtypes=F16,
             ops=("nn.functional.binary_cross_entropy_with_logits", "nn.functional.multilabel_soft_margin_loss",
                  "nn.functional.nll_loss", "nn.functional.poisson_nll_loss", "nn.functional.kl_div")),
    _declare("a defect in float16 on the CPU: the loss computes exp(-y x) in float16, which overflows for "
             "|x| above about 11, and is inf (its gradient NaN) where the answer is about 5 (docs/found.md)",
             fails, checks=("forward", "backward"), dtypes=F16, ops=("nn.functional.soft_margin_loss",)),
    _declare("a defect in float16 on the CPU: the gradient formula overflows float16's largest value (65504) "
             "in an intermediate where the gradient does not, and gives inf, NaN or 0 (docs/found.md)", fails,
             checks=("backward",), dtypes=F16,
             ops=("pow", "polygamma.polygamma_n_0", "_segment_reduce.lengths", "_segment_reduce.offsets",
                  "linalg.vector_norm", "masked.prod", "masked.normalize")),
    _declare("a log of a probability near 0 or 1 in bfloat16: the rounding of 1 - p is the error",
             checks=("forward",), dtypes=LOW, ops=("nn.functional.binary_cross_entropy",)),
)


# Where each element's own tolerance is not the rule (suite.conformance.ops.compare): the ops whose
# small elements are differences of much larger terms (a sum, product or interpolation whose terms
# cancel; a gradient computed from a rounded output, 1 - y * y for tanh), so that their rounding
# is at the scale of the terms. Those elements are judged at the scale of the output's largest:
# still judged, not approximate. What the sweep of op_db on the CPU (torch 2.11.0) found: every
# other op meets each element's own tolerance, in every checked dtype. Forms (method, inplace,
# out) are judged as forward is. {check: {dtypes: ops}}
SCALED: dict[str, dict[tuple[torch.dtype, ...], tuple[str, ...]]] = {
    "forward": {
        F32: ("__rmatmul__", "_upsample_bilinear2d_aa", "matmul", "matrix_exp", "special.hermite_polynomial_he"),
        BF16: ("nanmean", "nansum", "nn.functional.alpha_dropout", "nn.functional.binary_cross_entropy_with_logits",
               "nn.functional.multilabel_soft_margin_loss", "nn.functional.poisson_nll_loss",
               "nn.functional.soft_margin_loss", "nn.functional.triplet_margin_loss",
               "nn.functional.triplet_margin_with_distance_loss"),
        F16: ("cumulative_trapezoid", "linalg.vecdot", "nn.functional.conv_transpose1d",
              "nn.functional.cosine_embedding_loss", "nn.functional.cross_entropy"),
        LOW: ("_batch_norm_with_update", "_native_batch_norm_legit", "_segment_reduce.lengths",
              "_segment_reduce.offsets", "_unsafe_masked_index_put_accumulate", "addr", "cross", "diff", "gradient",
              "index_reduce.mean", "linalg.cross", "linspace", "linspace.tensor_overload", "log_softmax", "logspace",
              "logspace.tensor_overload", "masked.log_softmax", "native_batch_norm",
              "nn.functional.adaptive_avg_pool3d", "nn.functional.batch_norm", "nn.functional.bilinear",
              "nn.functional.conv_transpose2d", "nn.functional.cosine_similarity", "nn.functional.embedding_bag",
              "nn.functional.gaussian_nll_loss", "nn.functional.hinge_embedding_loss", "nn.functional.instance_norm",
              "nn.functional.interpolate.area", "nn.functional.interpolate.bicubic",
              "nn.functional.interpolate.linear", "nn.functional.interpolate.trilinear", "nn.functional.linear",
              "rsub"),
        F32 + LOW: ("addbmm", "linalg.multi_dot", "nn.functional.conv_transpose3d"),
    },
    "backward": {
        F32: ("linalg.lstsq.grad_oriented", "linalg.pinv.hermitian", "linalg.vander", "matrix_exp",
              "nn.functional.grid_sample", "special.log_ndtr"),
        BF16: ("combinations", "dist", "linalg.vector_norm", "logsumexp", "masked.normalize", "mul",
               "mvlgamma.mvlgamma_p_1", "mvlgamma.mvlgamma_p_3", "mvlgamma.mvlgamma_p_5",
               "nn.functional.binary_cross_entropy_with_logits", "nn.functional.cosine_embedding_loss",
               "nn.functional.poisson_nll_loss", "nn.functional.scaled_dot_product_attention",
               "nn.functional.soft_margin_loss", "nn.functional.tanhshrink", "take_along_dim", "true_divide",
               "xlogy"),
        F16: ("cumulative_trapezoid", "erfinv", "index_reduce.prod", "logaddexp2", "nn.functional.conv2d",
              "nn.functional.glu", "nn.functional.kl_div", "nn.functional.local_response_norm",
              "nn.functional.mse_loss", "nn.functional.multilabel_soft_margin_loss", "nn.functional.nll_loss",
              "nn.functional.pairwise_distance", "norm", "prod", "scatter_reduce.prod",
              "special.polygamma.special_polygamma_n_0", "tan", "tanh", "var.unbiased", "var_mean.unbiased"),
        LOW: ("__rdiv__", "__rmod__", "__rmul__", "_unsafe_masked_index", "addcdiv", "addcmul", "addmm", "atan2",
              "atanh", "cross", "cumprod", "diff", "div.no_rounding_mode", "einsum", "expm1", "gradient", "hypot",
              "kron", "ldexp", "lerp", "linalg.cross", "linalg.multi_dot", "log_softmax", "logaddexp",
              "masked.cumprod", "masked.log_softmax", "masked.logaddexp", "masked.std", "masked.var",
              "nn.functional.adaptive_avg_pool1d", "nn.functional.adaptive_avg_pool2d",
              "nn.functional.adaptive_avg_pool3d", "nn.functional.avg_pool1d", "nn.functional.avg_pool2d",
              "nn.functional.bilinear", "nn.functional.binary_cross_entropy", "nn.functional.conv_transpose2d",
              "nn.functional.cross_entropy", "nn.functional.embedding", "nn.functional.embedding_bag",
              "nn.functional.interpolate.area", "nn.functional.max_pool2d", "nn.functional.max_pool3d",
              "nn.functional.pad.circular", "nn.functional.pad.reflect", "nn.functional.pad.replicate",
              "nn.functional.pad.replicate_negative", "nn.functional.prelu", "nn.functional.softmin",
              "nn.functional.softsign", "nn.functional.triplet_margin_loss",
              "nn.functional.triplet_margin_with_distance_loss", "nn.functional.unfold", "renorm", "sinc",
              "special.xlog1py", "std", "std_mean", "trapezoid", "trapz", "unfold", "unfold_copy", "var", "var_mean"),
        F32 + BF16: ("pow",),
        F32 + F16: ("asin", "nn.functional.conv3d"),
        F32 + LOW: ("nn.functional.conv_transpose3d",),
    },
}

# The quick sweep of `torchsuite run --quick`: one op or two of each family, about 70 of op_db's
# 697 entries. All of op_db at one sample takes 12 s of checks on 2 cores, but the run rewrites
# its results file after each record, and 2,400 records cost it 60 to 100 s; these 70 cost
# seconds. check_ops(samples=1) sweeps all of op_db in the same 12 s.
QUICK_OPS = (
    # elementwise
    "abs", "neg", "exp", "log", "sqrt", "rsqrt", "sin", "tanh", "sigmoid", "erf", "pow", "add", "mul",
    "div.no_rounding_mode", "atan2", "maximum", "where", "clamp", "lerp", "addcmul",
    # reductions and scans
    "sum", "mean", "var", "prod", "amax", "logsumexp", "cumsum", "softmax", "log_softmax", "norm",
    # linear algebra
    "matmul", "mm", "bmm", "addmm", "baddbmm", "einsum", "linalg.solve", "linalg.inv", "linalg.cholesky",
    "linalg.qr", "linalg.vector_norm", "matrix_exp",
    # neural network
    "nn.functional.linear", "nn.functional.conv1d", "nn.functional.conv2d", "nn.functional.layer_norm",
    "nn.functional.batch_norm", "nn.functional.group_norm", "nn.functional.gelu", "nn.functional.relu",
    "nn.functional.silu", "nn.functional.cross_entropy", "nn.functional.mse_loss", "nn.functional.max_pool2d",
    "nn.functional.avg_pool2d", "nn.functional.embedding", "nn.functional.scaled_dot_product_attention",
    "nn.functional.interpolate.bilinear", "nn.functional.dropout",
    # shapes and indexing
    "cat", "stack", "transpose", "reshape", "index_select", "gather", "scatter_add", "sort", "topk",
    # spectral
    "fft.fft", "fft.rfft",
)


@dataclass(frozen=True)
class OpCase:
    """One OpInfo entry (an op and one of its variants) as the suite checks it."""

    info: object  # torch.testing._internal.opinfo.core.OpInfo

    @property
    def name(self) -> str:
        return case_name(self.info)

    @property
    def op(self) -> str:
        return self.info.name

    @property
    def variant(self) -> str:
        return self.info.variant_test_name

    def dtypes(self, device: str) -> tuple[torch.dtype, ...]:
        """The checked dtypes OpInfo says the op supports on `device`'s type."""
        supported = self.info.supported_dtypes(torch.device(device).type)
        return tuple(d for d in CHECKED_DTYPES if d in supported)

    def has(self, check: str) -> bool:
        """Whether OpInfo declares the form `check` calls: every op has forward and backward."""
        return {"method": self.info.method_variant is not None, "inplace": self.info.inplace_variant is not None,
                "out": self.info.supports_out}.get(check, True)

    def supports_backward(self, device: str, dtype: torch.dtype) -> bool:
        return dtype in self.info.supported_backward_dtypes(torch.device(device).type)

    def _decorators(self, check: str, device: str, dtype: torch.dtype) -> list[tuple[object, object, str]]:
        """(DecorateInfo or None for a bare one, decorator, kind) that concern `check` here."""
        device_type = torch.device(device).type
        found = []
        for decorate in self.info.decorators:
            if not hasattr(decorate, "is_active"):  # bare: every test of the op
                found.append((None, decorate, TOLERANCE))
                continue
            for test in OPINFO_TESTS[check]:
                if decorate.is_active(test.cls, test.test, device_type, dtype, {}):
                    takes = test.cpu_takes if device_type == "cpu" and test.cpu_takes is not None else test.takes
                    found += [(decorate, d, kind) for d in decorate.decorators for kind in takes]
        return found

    def expect(self, check: str, device: str, dtype: torch.dtype) -> Expect | None:
        """What is declared about `check` of this op in `dtype` on `device`: None means it must pass.

        The suite's own declarations come first; then OpInfo's, a skip before an expected failure
        (a skipped test is not run, so its expected failure was never seen)."""
        device_type = torch.device(device).type
        for declared in SUITE_DECLARATIONS.get(self.name, ()):
            if declared.concerns(device_type, dtype) and declared.expect.concerns(check):
                return declared.expect
        for decorator in self.info.decorators:
            only = ONLY_ON.get(getattr(decorator, "__name__", ""))
            if only is not None and only != device_type:
                return not_applicable(check, why=f"OpInfo runs {self.name} on {only} only")
        decorators = self._decorators(check, device, dtype)
        for decorate, decorator, kind in decorators:
            if kind == SKIP and skip_reason(decorator) is not None:
                return not_applicable(check, why=f"OpInfo skips {_where(decorate)}: {skip_reason(decorator)}")
        for decorate, decorator, kind in decorators:
            if kind == XFAIL and is_expected_failure(decorator):
                return fails(check, why=f"OpInfo expects {_where(decorate)} to fail")
        if check in VARIANT_CHECKS:  # the same numbers as the function: declared as it is
            return self.expect("forward", device, dtype)
        return None

    def scaled(self, check: str, device: str, dtype: torch.dtype) -> bool:
        """Whether `check` in `dtype` judges the op's small elements at its output's scale (SCALED)."""
        check = "forward" if check in VARIANT_CHECKS else check
        return any(dtype in dtypes and self.name in ops for dtypes, ops in SCALED[check].items())

    def strided(self, device: str, dtype: torch.dtype) -> bool:
        """Whether the op is checked on non-contiguous copies of its samples too: unless OpInfo's
        own test of them (TestCommon.test_noncontiguous_samples) is skipped or expected to fail
        here (an op whose meaning is its input's strides: as_strided, view_as_complex; sparse
        inputs, which have none)."""
        device_type = torch.device(device).type
        return not any(hasattr(decorate, "is_active") and decorate.is_active(
            "TestCommon", "test_noncontiguous_samples", device_type, dtype, {})
            and any(skip_reason(d) is not None or is_expected_failure(d) for d in decorate.decorators)
            for decorate in self.info.decorators)

    def tolerance(self, check: str, device: str, dtype: torch.dtype) -> tuple[float, float] | None:
        """(rtol, atol) the op declares for `dtype` in the tests of `check` (a variant's: the
        function's forward), the loosest if several."""
        check = "forward" if check in VARIANT_CHECKS else check
        found = []
        for _, decorator, kind in self._decorators(check, device, dtype):
            overrides = getattr(decorator, "d", None)
            if kind != TOLERANCE or not isinstance(overrides, dict) or dtype not in overrides:
                continue
            value = overrides[dtype]
            # toleranceOverride gives tol(atol, rtol); precisionOverride an atol alone
            found.append((getattr(value, "rtol", 0.0), getattr(value, "atol", value)))
        if not found:
            return None
        return max(r for r, _ in found), max(a for _, a in found)


def case_name(info) -> str:
    return f"{info.name}.{info.variant_test_name}" if info.variant_test_name else info.name


def skip_reason(decorator) -> str | None:
    """The reason of a `unittest.skip(reason)` decorator, None for any other decorator."""
    if getattr(decorator, "__qualname__", "") != "skip.<locals>.decorator":
        return None
    reasons = [c.cell_contents for c in decorator.__closure__ or () if isinstance(c.cell_contents, str)]
    return reasons[0] if reasons else "skipped"


def is_expected_failure(decorator) -> bool:
    return decorator is unittest.expectedFailure


def _where(decorate) -> str:
    test = ".".join(p for p in (decorate.cls_name, decorate.test_name) if p) or "every test"
    scope = [f"on {decorate.device_type}"] if decorate.device_type else []
    if decorate.dtypes:
        scope.append("in " + ", ".join(str(d).replace("torch.", "") for d in decorate.dtypes))
    return " ".join([test, *scope])


@functools.cache
def op_db() -> tuple:
    """OpInfo's op_db. Raises ImportError when torch's test utilities cannot be imported."""
    return tuple(import_released(OP_DB_MODULE).op_db)


@functools.cache
def _by_name() -> dict[str, OpCase]:
    return {case_name(info): OpCase(info) for info in op_db()}


def all_cases() -> list[OpCase]:
    return list(_by_name().values())


class UnknownOpError(UnknownCaseError):
    """An op name op_db does not have: one line with the closest names, not all 700."""

    def __init__(self, name: str, valid):
        super().__init__("OpInfo op", name, valid)
        close = difflib.get_close_matches(name, self.valid, n=5, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "no close match"
        self.args = (f"unknown OpInfo op {name!r} ({hint}; {len(self.valid)} ops in op_db, "
                     "listed by `torchsuite ops --list`)",)


def cases(names=None) -> list[OpCase]:
    """The op cases named (an OpInfo name selects all its variants; "name.variant" one), in
    op_db's order; every case when `names` is None. An unknown name raises UnknownOpError."""
    by_name = _by_name()
    if names is None:
        return list(by_name.values())
    if isinstance(names, str):
        names = [names]
    chosen: dict[str, OpCase] = {}
    for name in names:
        matched = [case for key, case in by_name.items() if key == name or case.op == name]
        if not matched:
            raise UnknownOpError(name, by_name)
        chosen.update((case.name, case) for case in matched)
    return [case for key, case in by_name.items() if key in chosen]


def validate_declarations() -> None:
    """Every suite declaration and quick op names an op of op_db, and declarations known checks."""
    by_name = _by_name()
    cases(QUICK_OPS)
    for name in {op for by_dtypes in SCALED.values() for ops in by_dtypes.values() for op in ops}:
        if name not in by_name:
            raise UnknownOpError(name, by_name)
    for name, declared in SUITE_DECLARATIONS.items():
        if name not in by_name:
            raise UnknownOpError(name, by_name)
        for d in declared:
            unknown = set(d.expect.checks) - set(CHECKS)
            if unknown:
                raise ValueError(f"{name}: unknown checks {sorted(unknown)}; checks: {', '.join(CHECKS)}")
