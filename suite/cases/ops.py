"""Differentiable ops, declared as data in the spirit of PyTorch's OpInfo.

Each OpCase holds the op, a seeded generator of float64 sample arguments (tensors that require
grad are the ones differentiated; everything else is passed through), and the checks that do
not apply, each with its reason. Samples stay away from the op's non-differentiable points
(kinks of relu and abs, ties of max and max_pool, bounds of clamp), because a finite
difference taken across a kink measures nothing. The checks live in suite/conformance/autograd/gradcheck.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from suite.cases.expect import NOT_APPLICABLE, Expect, not_applicable, outcome, validate
from suite.cases.registry import Check, Registry, check_names
from suite.cases.samples import away_from, distinct, labels, leaf, positive, randn

# Every check an op can take; an OpCase declares the ones that do not apply in `expect`.
# Quick runs take gradcheck (in fast mode) and jvp_vjp.
OP_CHECK_KINDS = (Check("gradcheck", quick=True), Check("gradgradcheck"), Check("forward_ad"), Check("batched_grad"),
                  Check("jvp_vjp", quick=True))
OP_CHECKS = check_names(OP_CHECK_KINDS)

F64 = torch.float64


@dataclass(frozen=True)
class OpCase:
    name: str
    op: Callable[..., torch.Tensor]
    sample_args: Callable[[torch.Generator], tuple]
    family: str
    expect: tuple[Expect, ...] = ()  # the checks that do not apply, each with its reason
    note: str = ""  # how the samples avoid non-differentiable points, when they must
    kind: str = "op"

    def __post_init__(self):
        validate(f"op {self.name!r}", self.expect, OP_CHECKS)
        if any(e.outcome != NOT_APPLICABLE or not e.checks for e in self.expect):
            raise ValueError(f"op {self.name!r}: an op declares only the checks that do not apply")

    def checks(self, quick: bool = False) -> tuple[str, ...]:
        """The checks that apply (quick: the quick ones), in OP_CHECKS order."""
        return tuple(c for c in check_names(OP_CHECK_KINDS, quick) if outcome(self.expect, c) != NOT_APPLICABLE)

    def samples(self, seed: int = 0) -> tuple:
        return self.sample_args(torch.Generator().manual_seed(seed))

    def describe(self) -> str:
        checks = f"only {', '.join(self.checks())}" if self.expect else "every check"
        note = f"; {self.note}" if self.note else ""
        return f"{self.family}, {checks}{note}"


CASES: Registry[OpCase] = Registry("op")


def op(name, fn, sample_args, family, **kw) -> OpCase:
    return CASES.add(OpCase(name=name, op=fn, sample_args=sample_args, family=family, **kw))


# --- the ops of the article's models ------------------------------------------------------
DOC = "article model op"
op("conv2d", F.conv2d, lambda g: (randn(g, 2, 2, 5, 5), randn(g, 3, 2, 3, 3), randn(g, 3)), DOC)
op("linear", F.linear, lambda g: (randn(g, 3, 4), randn(g, 5, 4), randn(g, 5)), DOC)
op("relu", F.relu, lambda g: (away_from(g, 3, 4),), DOC, note="samples at least 0.1 from the kink at 0")
op("max_pool2d", lambda x: F.max_pool2d(x, 2, 2), lambda g: (distinct(g, 2, 2, 4, 4),), DOC,
   note="no ties in a window (distinct values)")
op("flatten", lambda x: torch.flatten(x, 1), lambda g: (randn(g, 2, 3, 2, 2),), DOC)
op("view", lambda x: x.view(2, -1), lambda g: (randn(g, 2, 3, 4),), DOC)
op("log_softmax", lambda x: F.log_softmax(x, dim=1), lambda g: (randn(g, 3, 5),), DOC)
op("nll_loss", F.nll_loss, lambda g: (randn(g, 4, 5), labels(g, 4, 5)), DOC)
op("cross_entropy", F.cross_entropy, lambda g: (randn(g, 4, 5), labels(g, 4, 5)), DOC)
op("mse_loss", F.mse_loss, lambda g: (randn(g, 3, 4), randn(g, 3, 4)), DOC)

# --- elementwise ---------------------------------------------------------------------------
EW = "elementwise"
op("add", torch.add, lambda g: (randn(g, 3, 4), randn(g, 3, 4)), EW)
op("sub", torch.sub, lambda g: (randn(g, 3, 4), randn(g, 3, 4)), EW)
op("mul", torch.mul, lambda g: (randn(g, 3, 4), randn(g, 3, 4)), EW)
op("div", torch.div, lambda g: (randn(g, 3, 4), away_from(g, 3, 4, margin=0.5)), EW,
   note="divisor at least 0.5 from 0")
op("neg", torch.neg, lambda g: (randn(g, 3, 4),), EW)
op("exp", torch.exp, lambda g: (randn(g, 3, 4),), EW)
op("log", torch.log, lambda g: (positive(g, 3, 4),), EW, note="samples in [0.5, 2]")
op("sqrt", torch.sqrt, lambda g: (positive(g, 3, 4),), EW, note="samples in [0.5, 2]")
op("tanh", torch.tanh, lambda g: (randn(g, 3, 4),), EW)
op("sigmoid", torch.sigmoid, lambda g: (randn(g, 3, 4),), EW)
op("sin", torch.sin, lambda g: (randn(g, 3, 4),), EW)
op("pow", torch.pow, lambda g: (positive(g, 3, 4), randn(g, 3, 4)), EW, note="positive base")
op("abs", torch.abs, lambda g: (away_from(g, 3, 4),), EW, note="samples at least 0.1 from the kink at 0")
op("clamp", lambda x: torch.clamp(x, -0.5, 0.5), lambda g: (away_from(g, 3, 4, points=(-0.5, 0.5)),), EW,
   note="samples at least 0.1 from the bounds")
op("where", lambda c, x, y: torch.where(c, x, y),
   lambda g: (torch.rand(3, 4, generator=g) > 0.5, randn(g, 3, 4), randn(g, 3, 4)), EW)
op("gelu", F.gelu, lambda g: (randn(g, 3, 4),), EW)
op("softplus", F.softplus, lambda g: (randn(g, 3, 4),), EW)
op("leaky_relu", lambda x: F.leaky_relu(x, 0.1), lambda g: (away_from(g, 3, 4),), EW,
   note="samples at least 0.1 from the kink at 0")
op("elu", F.elu, lambda g: (away_from(g, 3, 4),), EW, note="samples at least 0.1 from 0")

# --- reductions ----------------------------------------------------------------------------
RED = "reduction"
op("sum", lambda x: x.sum(dim=1), lambda g: (randn(g, 3, 4),), RED)
op("mean", lambda x: x.mean(), lambda g: (randn(g, 3, 4),), RED)
op("prod", lambda x: x.prod(dim=0), lambda g: (away_from(g, 3, 4, margin=0.3),), RED,
   note="no zero factor (prod's backward divides by the factors)")
op("amax", lambda x: x.amax(dim=1), lambda g: (distinct(g, 3, 4),), RED, note="no ties (distinct values)")
op("var", lambda x: x.var(dim=1), lambda g: (randn(g, 3, 4),), RED)
op("std", lambda x: x.std(dim=1), lambda g: (randn(g, 3, 4),), RED)
op("norm", lambda x: torch.linalg.vector_norm(x, dim=1), lambda g: (randn(g, 3, 4),), RED)
op("logsumexp", lambda x: torch.logsumexp(x, dim=1), lambda g: (randn(g, 3, 4),), RED)
op("cumsum", lambda x: torch.cumsum(x, dim=1), lambda g: (randn(g, 3, 4),), RED)

# --- matrix products -----------------------------------------------------------------------
MM = "matrix product"
op("mm", torch.mm, lambda g: (randn(g, 3, 4), randn(g, 4, 2)), MM)
op("bmm", torch.bmm, lambda g: (randn(g, 2, 3, 4), randn(g, 2, 4, 2)), MM)
op("matmul_broadcast", torch.matmul, lambda g: (randn(g, 2, 3, 4), randn(g, 4, 2)), MM)
op("addmm", torch.addmm, lambda g: (randn(g, 3, 2), randn(g, 3, 4), randn(g, 4, 2)), MM)
op("einsum", lambda a, b: torch.einsum("bij,bjk->bik", a, b), lambda g: (randn(g, 2, 3, 4), randn(g, 2, 4, 2)), MM)

# --- indexing ------------------------------------------------------------------------------
IDX = "indexing"
op("slice", lambda x: x[1:, ::2], lambda g: (randn(g, 3, 4),), IDX)
op("index_select", lambda x, i: torch.index_select(x, 0, i), lambda g: (randn(g, 4, 3), torch.tensor([2, 0, 2])), IDX)
op("gather", lambda x, i: torch.gather(x, 1, i), lambda g: (randn(g, 3, 4), torch.randint(0, 4, (3, 2), generator=g)), IDX)
op("advanced_index", lambda x, i: x[i], lambda g: (randn(g, 4, 3), torch.tensor([1, 1, 3])), IDX,
   note="a repeated index: its gradients accumulate")
op("scatter_add", lambda x, i, s: x.scatter_add(1, i, s),
   lambda g: (randn(g, 3, 4), torch.randint(0, 4, (3, 2), generator=g), randn(g, 3, 2)), IDX)
op("masked_select", torch.masked_select, lambda g: (randn(g, 3, 4), torch.rand(3, 4, generator=g) > 0.5), IDX)
op("embedding", lambda w, i: F.embedding(i, w), lambda g: (randn(g, 5, 3), torch.tensor([0, 2, 2])), IDX)
op("topk", lambda x: x.topk(2, dim=1).values, lambda g: (distinct(g, 3, 5),), IDX, note="no ties (distinct values)")
op("sort", lambda x: x.sort(dim=1).values, lambda g: (distinct(g, 3, 5),), IDX, note="no ties (distinct values)")

# --- broadcasting --------------------------------------------------------------------------
BC = "broadcasting"
op("broadcast_add", torch.add, lambda g: (randn(g, 3, 1, 4), randn(g, 2, 4)), BC)
op("broadcast_mul", torch.mul, lambda g: (randn(g, 4, 1), randn(g, 1, 5)), BC)
op("expand", lambda x: x.expand(3, 2, 4), lambda g: (randn(g, 2, 1),), BC)

# --- in place (on a clone, so the leaf the check perturbs is untouched) ----------------------
IP = "in-place"
op("mul_", lambda x, y: x.clone().mul_(y), lambda g: (randn(g, 3, 4), randn(g, 3, 4)), IP)
op("add_alpha_", lambda x, y: x.clone().add_(y, alpha=2.5), lambda g: (randn(g, 3, 4), randn(g, 3, 4)), IP)
op("relu_", lambda x: F.relu(x.clone(), inplace=True), lambda g: (away_from(g, 3, 4),), IP,
   note="samples at least 0.1 from the kink at 0")
op("index_put_accumulate_", lambda x, v: x.clone().index_put_((torch.tensor([0, 2, 0], device=x.device),), v, accumulate=True),
   lambda g: (randn(g, 3, 4), randn(g, 3, 4)), IP)
op("sigmoid_", lambda x: x.clone().sigmoid_(), lambda g: (randn(g, 3, 4),), IP)

# --- normalisation -------------------------------------------------------------------------
NORM = "normalisation"
op("softmax", lambda x: F.softmax(x, dim=1), lambda g: (randn(g, 3, 5),), NORM)
op("layer_norm", lambda x, w, b: F.layer_norm(x, (4,), w, b), lambda g: (randn(g, 3, 4), randn(g, 4), randn(g, 4)), NORM)
op("batch_norm_training", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
   lambda g: (randn(g, 4, 3), randn(g, 3), randn(g, 3)), NORM)
op("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), lambda g: (randn(g, 2, 4, 3), randn(g, 4), randn(g, 4)), NORM)
op("normalize", lambda x: F.normalize(x, dim=1), lambda g: (randn(g, 3, 4),), NORM)

# --- joining and reshaping -----------------------------------------------------------------
SHAPE = "shape"
op("cat", lambda a, b: torch.cat([a, b], dim=1), lambda g: (randn(g, 2, 3), randn(g, 2, 2)), SHAPE)
op("stack", lambda a, b: torch.stack([a, b]), lambda g: (randn(g, 2, 3), randn(g, 2, 3)), SHAPE)
op("permute", lambda x: x.permute(2, 0, 1), lambda g: (randn(g, 2, 3, 4),), SHAPE)
op("avg_pool2d", lambda x: F.avg_pool2d(x, 2), lambda g: (randn(g, 1, 2, 4, 4),), SHAPE)

# --- ops whose higher-order or forward-mode derivatives PyTorch does not implement ----------
# Declared so a run says so instead of failing; tests/test_op_gradients.py checks that each
# declared exception still holds, so the declaration goes stale loudly when PyTorch adds one.
_NO_DOUBLE_BACKWARD = "PyTorch implements no derivative of this op's backward"
_NO_FORWARD_AD = "PyTorch implements no forward-mode derivative of this op"
_FIRST_ORDER_ONLY = (not_applicable("gradgradcheck", why=_NO_DOUBLE_BACKWARD),
                     not_applicable("forward_ad", why=_NO_FORWARD_AD),
                     not_applicable("jvp_vjp", why="needs forward mode, which PyTorch does not implement for this op"))
FIRST = "first order only"
op("cdist", torch.cdist, lambda g: (randn(g, 3, 2), randn(g, 4, 2)), FIRST, expect=_FIRST_ORDER_ONLY)
op("embedding_bag", lambda w, i: F.embedding_bag(i, w, torch.tensor([0, 2], device=w.device)),
   lambda g: (randn(g, 5, 3), torch.tensor([0, 2, 4, 1])), FIRST, expect=_FIRST_ORDER_ONLY)
op("grid_sample", lambda x, grid: F.grid_sample(x, grid, align_corners=False),
   lambda g: (randn(g, 1, 1, 4, 4), leaf(torch.rand(1, 3, 3, 2, generator=g, dtype=F64) * 1.6 - 0.8)),
   FIRST, expect=_FIRST_ORDER_ONLY, note="grid points inside the image, off the pixel centres")
op("multi_margin_loss", F.multi_margin_loss, lambda g: (randn(g, 3, 4), labels(g, 3, 4)), FIRST,
   expect=_FIRST_ORDER_ONLY)
