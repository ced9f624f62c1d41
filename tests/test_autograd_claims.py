"""The source article's claims about autograd, executed.

Section 2 claims a dynamic computation graph built as the code runs, gradients computed by the
chain rule dL/dθ = Σ_i dL/dy_i · dy_i/dθ, and tensors that carry grad_fn themselves.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from suite.cases import function_flaws as bad
from suite.conformance.autograd.chain_rule import autograd_gradient, contract, explicit_chain_rule
from suite.conformance.autograd.jacobians import central_difference_jacobian

F64 = torch.float64


def _randn(seed, *shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- the chain rule ------------------------------------------------------------------------
#
# explicit_chain_rule takes both factors, dL/dy_i and dy_i/dθ, from central differences, and
# the closed-form test below from formulas: neither runs autograd, so autograd's gradient is
# compared with something it did not compute.

def _tanh_then_square_plus_product():
    a = _randn(0, 5, 3)
    inner = lambda theta: torch.tanh(a @ theta)  # y in R^5
    outer = lambda y: (y ** 2).sum() + y.prod()  # L in R
    return a, inner, outer, _randn(1, 3)


def test_chain_rule_on_a_composition_of_two_functions():
    _, inner, outer, theta = _tanh_then_square_plus_product()
    torch.testing.assert_close(autograd_gradient(inner, outer, theta), explicit_chain_rule(inner, outer, theta))


def test_chain_rule_from_closed_form_factors():
    """dy/dθ = diag(1 - y²) A for y = tanh(Aθ); dL/dy_i = 2 y_i + Π_{j≠i} y_j."""
    a, inner, outer, theta = _tanh_then_square_plus_product()
    y = torch.tanh(a @ theta)
    dy_dtheta = (1 - y ** 2)[:, None] * a
    dl_dy = torch.stack([2 * y[i] + torch.cat([y[:i], y[i + 1:]]).prod() for i in range(len(y))])
    torch.testing.assert_close(autograd_gradient(inner, outer, theta), contract(dl_dy, dy_dtheta, theta.shape))
    # ...and the finite differences explicit_chain_rule uses measure these same factors
    torch.testing.assert_close(central_difference_jacobian(inner, theta), dy_dtheta)
    torch.testing.assert_close(central_difference_jacobian(outer, y).reshape(-1), dl_dy)


def test_chain_rule_through_a_article_model(model_spec):
    """θ = the last layer's bias, y = the model's class scores, L = the article's loss."""
    model = model_spec.build(seed=0).double()
    x, labels = model_spec.example_batch(2, seed=0)
    params = {n: p.detach() for n, p in model.named_parameters()}
    last_bias = [n for n in params if n.endswith("bias")][-1]

    def inner(theta):
        return functional_call(model, {**params, last_bias: theta}, (x.double(),))

    def outer(scores):
        return model_spec.loss_fn(scores, labels)

    theta = params[last_bias]
    torch.testing.assert_close(autograd_gradient(inner, outer, theta), explicit_chain_rule(inner, outer, theta))


def test_a_wrong_backward_shows_as_a_disagreement():
    """Had the factors come from autograd, they would share the wrong backward and agree."""
    a, _, outer, theta = _tanh_then_square_plus_product()
    inner = lambda t: bad.CubeWrongScale.apply(a @ t)  # the catalogue's backward 2x² for x³
    explicit = explicit_chain_rule(inner, outer, theta)
    torch.testing.assert_close(explicit, explicit_chain_rule(lambda t: (a @ t) ** 3, outer, theta))
    assert not torch.allclose(autograd_gradient(inner, outer, theta), explicit)


def test_the_explicit_chain_rule_is_not_trivially_equal():
    """A wrong inner function, or a sum missing a term, gives a different answer: the test can fail."""
    a, inner, outer, theta = _tanh_then_square_plus_product()
    right = autograd_gradient(inner, outer, theta)
    wrong = explicit_chain_rule(lambda t: torch.sin(a @ t), outer, theta)
    assert not torch.allclose(right, wrong)
    y = inner(theta)
    dl_dy = central_difference_jacobian(outer, y).reshape(-1)
    dy_dtheta = central_difference_jacobian(inner, theta)
    torch.testing.assert_close(contract(dl_dy, dy_dtheta, theta.shape), right)
    assert not torch.allclose(contract(dl_dy[1:], dy_dtheta[1:], theta.shape), right)


# --- the dynamic graph ---------------------------------------------------------------------

def _data_dependent(x):
    """Doubles x until its norm passes 10: the number of steps, and so the graph, depend on x."""
    steps = 0
    while x.norm() < 10:
        x = x * 2
        steps += 1
    return x.sum(), steps


@pytest.mark.parametrize("scale", [0.01, 1.0, 4.0])
def test_data_dependent_control_flow_builds_a_graph_per_input_and_gradients_follow(scale):
    x = (scale * torch.ones(3, dtype=F64)).requires_grad_()
    y, steps = _data_dependent(x)
    y.backward()
    assert torch.equal(x.grad, torch.full((3,), 2.0 ** steps, dtype=F64))
    depth, node = 0, y.grad_fn
    while node is not None and type(node).__name__ != "AccumulateGrad":
        depth += 1
        node = node.next_functions[0][0]
    assert depth == steps + 1  # one MulBackward0 per doubling, then the SumBackward0


def test_a_branch_taken_at_run_time_decides_the_gradient():
    def f(x):
        return x ** 3 if x.sum() > 0 else torch.sin(x)

    pos = torch.tensor([0.5, 0.2], dtype=F64, requires_grad=True)
    neg = torch.tensor([-0.5, 0.2], dtype=F64, requires_grad=True)
    f(pos).sum().backward()
    f(neg).sum().backward()
    torch.testing.assert_close(pos.grad, 3 * pos.detach() ** 2)
    torch.testing.assert_close(neg.grad, torch.cos(neg.detach()))
    assert type(f(pos).grad_fn).__name__ == "PowBackward0"
    assert type(f(neg).grad_fn).__name__ == "SinBackward0"


def test_grad_fn_chain_leads_back_to_the_leaf():
    x = torch.randn(3, dtype=F64, requires_grad=True)
    y = (x.exp() * 2).sum()
    names = []
    node = y.grad_fn
    while node.next_functions:
        names.append(type(node).__name__)
        node = node.next_functions[0][0]
    assert names == ["SumBackward0", "MulBackward0", "ExpBackward0"]
    assert type(node).__name__ == "AccumulateGrad" and node.variable is x
    assert x.grad_fn is None and x.is_leaf


def test_the_graph_is_freed_after_backward_unless_retained():
    x = torch.randn(3, dtype=F64, requires_grad=True)
    y = (x.exp()).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()
    z = (x.exp()).sum()
    x.grad = None
    z.backward(retain_graph=True)
    once = x.grad.clone()
    z.backward()
    torch.testing.assert_close(x.grad, 2 * once)  # retained: a second backward accumulates


def test_hooks_see_and_can_change_gradients():
    x = torch.randn(3, dtype=F64, requires_grad=True)
    h = x * 2
    seen = []
    h.register_hook(lambda grad: seen.append(grad.clone()) or grad * 10)
    h.sum().backward()
    torch.testing.assert_close(seen[0], torch.ones(3, dtype=F64))
    torch.testing.assert_close(x.grad, torch.full((3,), 20.0, dtype=F64))  # 2 from the mul, 10 from the hook

    layer = torch.nn.Linear(3, 2).double()
    grad_outputs = []
    layer.register_full_backward_hook(lambda module, gin, gout: grad_outputs.append(gout[0].shape))
    layer(torch.randn(4, 3, dtype=F64, requires_grad=True)).sum().backward()
    assert grad_outputs == [torch.Size([4, 2])]


def test_no_grad_and_inference_mode_record_nothing():
    x = torch.randn(3, dtype=F64, requires_grad=True)
    with torch.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    with torch.inference_mode():
        z = x * 2
    assert z.is_inference() and not z.requires_grad
    with pytest.raises(RuntimeError, match="[Ii]nference tensors cannot be saved for backward"):
        (x * z).sum().backward()


def test_detach_shares_storage_and_stops_the_gradient():
    x = torch.randn(3, dtype=F64, requires_grad=True)
    d = x.detach()
    assert d.data_ptr() == x.data_ptr() and not d.requires_grad
    (x * 2 + d * 3).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 2.0, dtype=F64))  # d's path gives nothing


def test_modifying_a_saved_tensor_in_place_is_caught_by_the_version_counter():
    x = torch.randn(3, dtype=F64, requires_grad=True)
    y = x.exp()  # exp saves its output for backward
    version = y._version
    y.add_(1)
    assert y._version == version + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_tensors_carry_grad_fn_without_variable():
    x = torch.randn(3, dtype=F64, requires_grad=True)
    y = F.relu(x) * 3
    assert isinstance(y, torch.Tensor) and y.grad_fn is not None and y.requires_grad
