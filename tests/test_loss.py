"""InfoNCELoss against a plain per-query loop, plus its diagnostics."""

import math

import pytest
import torch

from hybridlib.training.loss import MAX_LOGIT_SCALE, InfoNCELoss, LossOutput


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


# ---------------------------------------------------------------------- hard negatives (triplets)


def test_hard_negatives_by_hand_both_forms_and_symmetric():
    """Two pairs on the unit circle, one hard negative (the second pair has none), temperature 1.

    cosines: s(q0,p0)=1, s(q0,p1)=0.6, s(q1,p0)=0, s(q1,p1)=0.8; s(q0,h0)=0.8, s(q1,h0)=0.6; h1 is missing.
    """
    e = math.exp
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64) * 3.0  # scaling must not matter
    h = torch.tensor([[0.8, 0.6], [-0.3, 0.1]], dtype=torch.float64)  # h1 is junk: masked out
    mask = torch.tensor([True, False])
    batch_form = (-math.log(e(1) / (e(1) + e(0.6) + e(0.8))) - math.log(e(0.8) / (e(0) + e(0.8) + e(0.6)))) / 2
    paper_form = (-math.log(e(1) / (e(1) + e(0.8))) - math.log(e(0.8) / (e(0.8) + e(0.6)))) / 2
    passage_to_query = (-math.log(e(1) / (e(1) + e(0))) - math.log(e(0.8) / (e(0.6) + e(0.8)))) / 2
    cases = {("batch", False): batch_form, ("paper", False): paper_form,
             ("batch", True): (batch_form + passage_to_query) / 2, ("paper", True): (paper_form + passage_to_query) / 2}
    for (form, symmetric), expected in cases.items():
        out = InfoNCELoss(temperature=1.0, symmetric=symmetric, form=form)(q, p, h, mask)
        assert out.loss.item() == pytest.approx(expected, abs=1e-12), (form, symmetric)
        assert out.hard_negative_similarity == pytest.approx(0.8)
        assert out.accuracy == 1.0
        assert out.positive_similarity == pytest.approx(0.9) and out.negative_similarity == pytest.approx(0.3)
    # without negatives the loss is the in-batch InfoNCE, and the paper form refuses to run
    assert InfoNCELoss(temperature=1.0)(q, p).hard_negative_similarity is None
    with pytest.raises(ValueError, match="form='paper'.*needs negative embeddings"):
        InfoNCELoss(form="paper")(q, p)
    with pytest.raises(ValueError, match="form must be one of"):
        InfoNCELoss(form="eq1")


def test_masked_negatives_give_finite_gradients_to_a_learnable_temperature():
    q, p = random_inputs(seed=6)
    h = torch.randn_like(q, requires_grad=True)
    mask = torch.tensor([True, False, True, False, False, True])
    loss_fn = InfoNCELoss(learnable_temperature=True).double()
    out = loss_fn(q, p, h, mask)
    scale_grad, h_grad = torch.autograd.grad(out.loss, (loss_fn.logit_scale, h))
    assert torch.isfinite(scale_grad) and scale_grad != 0
    assert torch.all(h_grad[~mask] == 0) and h_grad[mask].abs().sum() > 0  # missing negatives get nothing
    with pytest.raises(ValueError, match="negative embeddings"):
        loss_fn(q, p, h[:3], mask[:3])
