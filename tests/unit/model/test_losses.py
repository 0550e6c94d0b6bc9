"""LogMILP loss terms, each pinned to numbers worked out by hand in the test."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ray_logmilp.model.losses import (
    LOCALIZATION_CANDIDATES,
    LossConfig,
    attention_entropy_loss,
    compute_losses,
    consistency_loss,
    focal_loss,
    instance_loss,
    proto_loss,
)
from ray_logmilp.model.logmilp import LogMILP, ModelConfig


def test_focal_loss_hand_values():
    # Both bags have p_t = 3/4 (logit gap ln 3): (1 − p_t)^2 = 1/16, −log p_t = ln(4/3) = 0.287682.
    # Positive bag: α = 0.25 → 0.25 · 0.0625 · 0.287682 = 0.0044950
    # Negative bag: 1 − α = 0.75 → 0.75 · 0.0625 · 0.287682 = 0.0134851
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    y = torch.tensor([1, 0])
    expected = (0.0044950 + 0.0134851) / 2
    assert focal_loss(logits, y, gamma=2.0, alpha=0.25).item() == pytest.approx(expected, abs=1e-6)


def test_focal_loss_without_focusing_at_neutral_weight_is_half_the_cross_entropy():
    # γ = 0, α = 0.5: −½ log p_t. For p_t = 3/4 and p_t = 1/2: ½ (0.287682 + 0.693147) / 2 = 0.245207
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    y = torch.tensor([1, 0])
    assert focal_loss(logits, y, gamma=0.0, alpha=0.5).item() == pytest.approx(0.245207, abs=1e-6)
    assert focal_loss(logits, y, gamma=0.0).item() == pytest.approx(0.5 * F.cross_entropy(logits, y).item(), abs=1e-6)


def test_focal_loss_accepts_float_labels():
    # The defaults (γ = 2, α = 0.5): 0.5 · 0.0625 · 0.287682 = 0.0089901
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert focal_loss(logits, torch.tensor([1.0])).item() == pytest.approx(0.0089901, abs=1e-6)


def test_proto_loss_hand_values():
    # Positives: max(0, 0.8 − 0.5) = 0.3 and max(0, 0.8 − 0.9) = 0 → mean 0.15
    # Negatives: max(0, 0.5 − 0.2) = 0.3 and max(0, 0.5 − 0.7) = 0 → mean 0.15
    # Total 0.3 (E_bag of positives and M_bag of negatives play no part).
    M = torch.tensor([0.5, 0.9, 0.1, 0.1])
    E = torch.tensor([0.0, 0.0, 0.2, 0.7])
    y = torch.tensor([1, 1, 0, 0])
    got = proto_loss(M, E, y, delta_p=0.8, delta_e=0.5)
    assert got.item() == pytest.approx(0.3, abs=1e-6)


def test_proto_loss_empty_group_is_zero_not_nan():
    # Only positives: the negative mean is 0. max(0, 0.8 − 0.6) = 0.2.
    got = proto_loss(torch.tensor([0.6]), torch.tensor([0.0]), torch.tensor([1]))
    assert got.item() == pytest.approx(0.2, abs=1e-6)
    # Only negatives: max(0, 0.5 − 0.1) = 0.4.
    got = proto_loss(torch.tensor([0.0]), torch.tensor([0.1]), torch.tensor([0]))
    assert got.item() == pytest.approx(0.4, abs=1e-6)


def test_attention_entropy_loss_hand_values():
    # Bag 0 (2 real of 4): head 0 = (½, ½) → ln2/ln2 = 1; head 1 = (1, 0) → 0.
    # Bag 1 (4 real): head 0 uniform → ln4/ln4 = 1; head 1 = (½, ½, 0, 0) → ln2/ln4 = ½.
    # Bag 2 (1 real): → 0 for both heads.  Mean over 6 (bag, head) pairs: 2.5 / 6.
    att = torch.tensor([
        [[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]],
        [[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]],
        [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]],
    ])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    got = attention_entropy_loss(att, mask)
    assert got.item() == pytest.approx(2.5 / 6, abs=1e-6)


def test_consistency_loss_hand_values():
    # Positives: max(0, 0.5 − (0.9 − 0.2)) = 0 and max(0, 0.5 − (0.6 − 0.5)) = 0.4 → mean 0.2.
    # The negative bag (no drop at all) does not count.
    p_orig = torch.tensor([0.9, 0.6, 0.9])
    p_pert = torch.tensor([0.2, 0.5, 0.9])
    y = torch.tensor([1, 1, 0])
    assert consistency_loss(p_orig, p_pert, y, delta_c=0.5).item() == pytest.approx(0.2, abs=1e-6)
    # A rise in score after removal is penalised beyond Δ_c: 0.5 − (0.3 − 0.5) = 0.7.
    assert consistency_loss(torch.tensor([0.3]), torch.tensor([0.5]), torch.tensor([1])).item() == \
        pytest.approx(0.7, abs=1e-6)


def test_consistency_loss_without_positives_is_zero():
    got = consistency_loss(torch.tensor([0.9, 0.1]), torch.tensor([0.9, 0.1]), torch.tensor([0, 0]))
    assert got.item() == 0.0


def test_loss_config_validation():
    with pytest.raises(ValueError, match="perturbation"):
        LossConfig(perturbation="drop")
    with pytest.raises(ValueError, match="lambda_c"):
        LossConfig(lambda_c=-1.0)
    with pytest.raises(ValueError, match="regularizer_warmup_epochs"):
        LossConfig(regularizer_warmup_epochs=-1)


# ------------------------------------------------------------------------------------------------
# compute_losses


def _model(**overrides) -> LogMILP:
    torch.manual_seed(0)
    cfg = dict(hidden_dim=16, encoder_heads=2, ff_dim=32, dropout=0.0, num_prototypes=3, attention_heads=2)
    cfg.update(overrides)
    return LogMILP(ModelConfig(**cfg), 8)


def _batch():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    y = torch.tensor([1, 0, 1, 0])
    return x, mask, y


def _counted_model_and_batch():
    """A small model whose forward calls are recorded, and a batch of 2 positive and 2 negative bags."""
    model = _model()
    return model, _count_forwards(model), _batch()


def _count_forwards(model):
    calls = []
    model.register_forward_hook(lambda mod, args, out: calls.append((args[0].clone(), args[1].clone())))
    return calls


def test_compute_losses_total_is_weighted_sum_of_terms():
    model = _model()
    x, mask, y = _batch()
    cfg = LossConfig(lambda_p=0.3, lambda_a=0.2, lambda_c=0.7, lambda_l=0.4, lambda_i=0.6)
    total, terms, out = compute_losses(model, x, mask, y, cfg)
    assert set(terms) == {"loss", "cls", "proto", "attn", "con", "loc", "inst"}
    expected = (terms["cls"] + 0.3 * terms["proto"] + 0.2 * terms["attn"] + 0.7 * terms["con"]
                + 0.4 * terms["loc"] + 0.6 * terms["inst"])
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert terms["loss"] == pytest.approx(total.item(), rel=1e-6)
    assert out.prob.shape == (4,)
    # Each term agrees with its own function on the first pass's outputs.
    assert terms["cls"] == pytest.approx(
        focal_loss(out.logits, y).item(), rel=1e-6)
    assert terms["proto"] == pytest.approx(proto_loss(out.M_bag, out.E_bag, y).item(), rel=1e-6)
    assert terms["attn"] == pytest.approx(attention_entropy_loss(out.attention, mask).item(), rel=1e-6)


def test_compute_losses_second_pass_sees_original_and_perturbed_bags_stacked():
    model, calls, (x, mask, y) = _counted_model_and_batch()
    B = x.shape[0]
    _, _, out = compute_losses(model, x, mask, y, LossConfig(perturbation="zero", lambda_l=0.0))
    # With L_loc off: a no-grad probe on the bags, then one differentiable pass on [original; perturbed] (DDP-safe).
    assert len(calls) == 2
    (x1, m1), (x2, m2) = calls
    assert torch.equal(x1, x) and torch.equal(m1, mask)
    assert x2.shape[0] == 2 * B and torch.equal(x2[:B], x) and torch.equal(m2[B:], mask)
    changed = (x2[B:] != x).any(dim=-1)                              # [B,W]
    assert changed.sum(dim=1).tolist() == [1, 1, 1, 1]               # exactly one row zeroed per bag
    assert (x2[B:][changed] == 0).all()
    assert out.prob.shape == (B,)

    calls.clear()
    compute_losses(model, x, mask, y, LossConfig(perturbation="mask", lambda_l=0.0))
    (_, _), (x2, m2) = calls
    # One instance leaves each bag with ≥ 2 instances; the single-instance bag (3) is zeroed instead.
    assert (mask.sum(1) - m2[B:].sum(1)).tolist() == [1, 1, 1, 0]
    assert (x2[B + 3, 0] == 0).all()


def test_compute_losses_without_consistency_runs_once():
    model, calls, (x, mask, y) = _counted_model_and_batch()
    total, terms, _ = compute_losses(model, x, mask, y, LossConfig(use_consistency=False, lambda_l=0.0))
    assert len(calls) == 1
    assert terms["con"] == 0.0
    total.backward()


def test_consistency_term_reaches_the_gradient():
    x, mask, y = _batch()
    grads = []
    for cfg in (LossConfig(), LossConfig(use_consistency=False)):
        model = _model()
        total, terms, _ = compute_losses(model, x, mask, y, cfg)
        total.backward()
        grads.append(model.classifier[-1].weight.grad.clone())
        assert (terms["con"] > 0) == cfg.use_consistency
    assert not torch.allclose(grads[0], grads[1])


def test_compute_losses_without_prototypes():
    model = _model(use_prototypes=False)
    x, mask, y = _batch()
    total, terms, _ = compute_losses(model, x, mask, y, LossConfig())
    assert terms["proto"] == 0.0
    total.backward()


def test_regularizers_ramp_in_over_the_warmup_epochs():
    from ray_logmilp.model.losses import loss_config_for_epoch

    cfg = LossConfig(lambda_a=0.02, lambda_c=1.0, lambda_p=0.1, regularizer_warmup_epochs=4)
    assert (loss_config_for_epoch(cfg, 0).lambda_a, loss_config_for_epoch(cfg, 0).lambda_c) == (0.0, 0.0)
    assert loss_config_for_epoch(dataclasses.replace(cfg, lambda_l=0.4), 2).lambda_l == pytest.approx(0.2)
    assert loss_config_for_epoch(dataclasses.replace(cfg, lambda_i=0.3), 0).lambda_i == 0.3   # never ramped
    half = loss_config_for_epoch(cfg, 2)
    assert half.lambda_a == pytest.approx(0.01) and half.lambda_c == pytest.approx(0.5)
    assert half.lambda_p == pytest.approx(0.05)
    assert loss_config_for_epoch(cfg, 9) == cfg
    assert loss_config_for_epoch(LossConfig(regularizer_warmup_epochs=0), 0) == LossConfig(regularizer_warmup_epochs=0)


# ------------------------------------------------------------------------------------------------
# localization (L_loc)


def test_localization_targets_pick_the_candidate_whose_removal_lowers_p_most():
    from ray_logmilp.model.losses import localization_targets
    from ray_logmilp.model.localize import attention_entropy

    model = _model().eval()
    x, mask, _ = _batch()
    with torch.no_grad():
        attention = model(x, mask).attention
    key_head, target = localization_targets(model, x, mask, attention, candidates=3)
    assert torch.equal(key_head, attention_entropy(attention, mask).argmin(dim=1))
    for b in range(x.shape[0]):
        n = int(mask[b].sum())
        if n == 1:  # nothing can be removed from a one-line bag: its line is the target
            assert int(target[b]) == 0
            continue
        candidates = attention[b, key_head[b], :n].topk(min(3, n)).indices.tolist()
        assert int(target[b]) in candidates                       # never padding, never a 4th line
        p_without = {}
        for c in candidates:                                      # brute force: drop each one alone
            m = mask[b:b + 1].clone()
            m[0, c] = False
            with torch.no_grad():
                p_without[c] = model(x[b:b + 1], m).prob.item()
        assert p_without[int(target[b])] == pytest.approx(min(p_without.values()), abs=1e-5)


def test_localization_loss_hand_values():
    from ray_logmilp.model.losses import localization_loss

    attention = torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]],
                              [[0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]])      # [B=2,K=2,W=3]
    key_head, target = torch.tensor([1, 0]), torch.tensor([0, 1])
    # Only the positive bag counts: −log A[0, head 1, line 0] = −log 0.6.
    loss = localization_loss(attention, key_head, target, torch.tensor([1, 0]))
    assert loss.item() == pytest.approx(-math.log(0.6), rel=1e-6)
    assert localization_loss(attention, key_head, target, torch.tensor([0, 0])).item() == 0.0


def test_compute_losses_with_localization_term():
    model, calls, (x, mask, y) = _counted_model_and_batch()
    cfg = LossConfig(lambda_p=0.3, lambda_a=0.2, lambda_c=0.7, lambda_l=0.5)
    total, terms, _ = compute_losses(model, x, mask, y, cfg)
    # probe, the stacked differentiable pass, then the candidates of the 2 positive bags (no grad)
    assert len(calls) == 3 and calls[2][0].shape[0] == 2 * min(LOCALIZATION_CANDIDATES, x.shape[1])
    assert terms["loc"] > 0
    expected = (terms["cls"] + 0.3 * terms["proto"] + 0.2 * terms["attn"] + 0.7 * terms["con"] + 0.5 * terms["loc"]
                + cfg.lambda_i * terms["inst"])
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert model.attn_out_weight.grad is not None
    # Off by default-weight 0: no extra pass, and the term reads 0.
    calls.clear()
    _, terms, _ = compute_losses(model, x, mask, y, dataclasses.replace(cfg, lambda_l=0.0))
    assert len(calls) == 2 and terms["loc"] == 0.0


# ------------------------------------------------------------------------------------------------
# instance-level MIL (L_inst)


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_instance_loss_hand_values():
    inf = float("inf")
    # Bag 0 positive (3 real lines), bag 1 negative (2 real lines + padding that holds −inf).
    scores = torch.tensor([
        [[-1.0, 2.0, 0.5, -inf], [0.0, -3.0, 1.0, -inf]],
        [[-2.0, 1.0, -inf, -inf], [0.5, -0.5, -inf, -inf]],
    ])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    y = torch.tensor([1, 0])
    positive = (_softplus(-2.0) + _softplus(-1.0)) / 2                   # −log σ(top line), per head
    negative = (_softplus(1.0) + _softplus(0.5)) / 2                     # −log(1 − σ(top line))
    expected = (positive + negative) / 2
    assert instance_loss(scores, mask, y).item() == pytest.approx(expected, rel=1e-6)
    # Padding never counts: junk there (even above every real score) changes nothing, gets no gradient.
    junk = scores.clone()
    junk[0, :, 3] = 50.0
    junk[1, :, 2:] = 50.0
    junk.requires_grad_(True)
    loss = instance_loss(junk, mask, y)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.all(junk.grad[~mask[:, None, :].expand_as(junk)] == 0)
    # Each head's gradient reaches its top line only.
    assert torch.count_nonzero(junk.grad) == 4


def test_instance_loss_has_no_positional_shortcut():
    """Low only when negatives score every line low and positives have a high line; scoring the same
    line high in every bag (the first, say) must cost as much as a constant score."""
    mask = torch.ones(2, 64, dtype=torch.bool)
    y = torch.tensor([1, 0])
    good = torch.full((2, 1, 64), -6.0)
    good[0, 0, 17] = 6.0                                         # one anomalous line in the positive bag
    first_line_high = torch.full((2, 1, 64), -6.0)
    first_line_high[:, 0, 0] = 6.0
    constant_high, constant_low = torch.full((2, 1, 64), 6.0), torch.full((2, 1, 64), -6.0)
    assert instance_loss(good, mask, y).item() < 0.01
    for degenerate in (first_line_high, constant_high, constant_low):
        assert instance_loss(degenerate, mask, y).item() > 2.9


def test_compute_losses_with_instance_term_uses_the_model_line_scores():
    model, calls, (x, mask, y) = _counted_model_and_batch()
    cfg = LossConfig(lambda_p=0.3, lambda_a=0.2, lambda_c=0.7, lambda_l=0.0, lambda_i=0.25)
    total, terms, out = compute_losses(model, x, mask, y, cfg)
    assert len(calls) == 2                                       # no extra forward pass for L_inst
    assert terms["inst"] == pytest.approx(instance_loss(out.scores, mask, y).item(), rel=1e-6)
    expected = terms["cls"] + 0.3 * terms["proto"] + 0.2 * terms["attn"] + 0.7 * terms["con"] + 0.25 * terms["inst"]
    assert total.item() == pytest.approx(expected, rel=1e-6)
    # The scores are the logits behind the attention: softmax over real lines gives it back.
    assert torch.allclose(torch.softmax(out.scores, dim=-1), out.attention, atol=1e-6)
    # Only the instance term: its gradient reaches the pooling heads' scoring weights.
    model.zero_grad()
    only = LossConfig(lambda_p=0.0, lambda_a=0.0, lambda_c=0.0, lambda_l=0.0, lambda_i=1.0, use_consistency=False)
    total, terms, _ = compute_losses(model, x, mask, y, only)
    (total - compute_losses(model, x, mask, y, dataclasses.replace(only, lambda_i=0.0))[0]).backward()
    assert model.attn_out_weight.grad is not None and model.attn_out_weight.grad.abs().sum() > 0
    assert compute_losses(model, x, mask, y, dataclasses.replace(only, lambda_i=0.0))[1]["inst"] == 0.0
    with pytest.raises(ValueError, match="lambda_i"):
        LossConfig(lambda_i=-0.1)
