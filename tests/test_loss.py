"""InfoNCELoss against a plain per-query loop, plus its diagnostics."""

import math

import pytest
import torch

from hybridlib.loss import MAX_LOGIT_SCALE, InfoNCELoss, LossOutput


def reference_loss(q: torch.Tensor, p: torch.Tensor, t, symmetric: bool = False) -> torch.Tensor:
    """Textbook InfoNCE written as an explicit loop over queries (and passages, if symmetric)."""
    n = len(q)
    qn = [q[i] / q[i].norm() for i in range(n)]
    pn = [p[j] / p[j].norm() for j in range(n)]
    s = [[torch.dot(qn[i], pn[j]) for j in range(n)] for i in range(n)]

    def direction(sim):  # sim(i, j): score of "own" item i against item j
        total = 0
        for i in range(n):
            denominator = sum(torch.exp(sim(i, j) / t) for j in range(n))
            total = total - torch.log(torch.exp(sim(i, i) / t) / denominator)
        return total / n

    query_to_passage = direction(lambda i, j: s[i][j])
    if not symmetric:
        return query_to_passage
    return (query_to_passage + direction(lambda i, j: s[j][i])) / 2


def random_inputs(n=6, d=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # deliberately not normalised: the loss must normalise itself
    q = (2 * torch.randn(n, d, generator=generator, dtype=torch.float64)).requires_grad_()
    p = (2 * torch.randn(n, d, generator=generator, dtype=torch.float64)).requires_grad_()
    return q, p


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_matches_loop_reference_value_and_gradients(symmetric, temperature):
    q, p = random_inputs()
    out = InfoNCELoss(temperature=temperature, symmetric=symmetric)(q, p)
    expected = reference_loss(q, p, temperature, symmetric=symmetric)

    assert out.loss.dtype == torch.float64
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6, rel=1e-6)
    grads = torch.autograd.grad(out.loss, (q, p))
    expected_grads = torch.autograd.grad(expected, (q, p))
    for grad, expected_grad in zip(grads, expected_grads):
        assert grad.abs().max() > 0
        torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-6)


def test_symmetric_differs_from_one_directional():
    q, p = random_inputs(seed=1)
    one_way = InfoNCELoss(symmetric=False)(q, p).loss.item()
    both_ways = InfoNCELoss(symmetric=True)(q, p).loss.item()
    assert abs(one_way - both_ways) > 1e-3


def test_learnable_temperature_gets_gradient_matching_reference():
    q, p = random_inputs(seed=2)
    loss_fn = InfoNCELoss(temperature=0.1, learnable_temperature=True).double()
    assert [name for name, _ in loss_fn.named_parameters()] == ["logit_scale"]
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(10.0))

    out = loss_fn(q, p)
    assert out.temperature == pytest.approx(0.1)
    (grad,) = torch.autograd.grad(out.loss, loss_fn.logit_scale)

    logit_scale = loss_fn.logit_scale.detach().clone().requires_grad_()
    expected = reference_loss(q, p, torch.exp(-logit_scale))
    (expected_grad,) = torch.autograd.grad(expected, logit_scale)
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert grad.item() != 0
    assert grad.item() == pytest.approx(expected_grad.item(), abs=1e-6)


def test_fixed_temperature_has_no_parameters():
    loss_fn = InfoNCELoss(temperature=0.05)
    assert list(loss_fn.parameters()) == []
    assert loss_fn.temperature == pytest.approx(0.05)


def test_learnable_temperature_is_clamped_at_001():
    q, p = random_inputs(seed=3)
    loss_fn = InfoNCELoss(temperature=0.05, learnable_temperature=True).double()
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))  # scale 1000 -> clamped to 100
    out = loss_fn(q, p)
    assert out.temperature == pytest.approx(1 / MAX_LOGIT_SCALE)
    assert loss_fn.temperature == pytest.approx(0.01)
    assert out.loss.item() == pytest.approx(reference_loss(q, p, 0.01).item(), abs=1e-6)


def test_diagnostics_on_hand_made_case():
    # cosine matrix (rows: queries, columns: passages):
    #   q0=(1,0)   : [1.0, 0.0, 0.6]  -> top passage 0 (own)
    #   q1=(0,1)   : [0.0, 1.0, 0.8]  -> top passage 1 (own)
    #   q2=(1,0)   : [1.0, 0.0, 0.6]  -> top passage 0 (wrong)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]) * torch.tensor([[3.0], [0.5], [2.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]) * 4.0  # scaling must not matter
    out = InfoNCELoss(temperature=0.05)(q, p)
    assert isinstance(out, LossOutput)
    assert out.accuracy == pytest.approx(2 / 3)
    assert out.positive_similarity == pytest.approx((1.0 + 1.0 + 0.6) / 3)
    assert out.negative_similarity == pytest.approx((0.0 + 0.6 + 0.0 + 0.8 + 1.0 + 0.0) / 6)
    assert out.temperature == pytest.approx(0.05)
    assert all(isinstance(v, float) for v in (out.accuracy, out.positive_similarity,
                                              out.negative_similarity, out.temperature))


def test_perfect_alignment():
    generator = torch.Generator().manual_seed(4)
    q = torch.randn(8, 16, generator=generator)
    out = InfoNCELoss(temperature=0.01)(q, q.clone())
    assert out.accuracy == 1.0
    assert out.positive_similarity == pytest.approx(1.0, abs=1e-6)
    assert out.negative_similarity < 0.5
    assert out.loss.item() < 0.01 * math.log(8)  # far below chance level log(n)


def test_half_precision_inputs_give_float32_loss():
    q, p = random_inputs(seed=5)
    out = InfoNCELoss()(q.detach().bfloat16(), p.detach().bfloat16())
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(reference_loss(q, p, 0.05).item(), rel=0.05)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError):
        InfoNCELoss(temperature=0.0)
    with pytest.raises(ValueError):
        InfoNCELoss()(torch.randn(4, 8), torch.randn(5, 8))
