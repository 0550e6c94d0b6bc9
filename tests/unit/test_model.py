"""LogMILP model: shapes, padding invariance, attention, perturbation, ablations, learning, determinism."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ray_logmilp.model.losses import LossConfig, compute_losses
from ray_logmilp.model.logmilp import (
    LogMILP,
    LogMILPOutput,
    ModelConfig,
    attention_entropy,
    perturb_key_instance,
)

D = 16


def tiny_config(**overrides) -> ModelConfig:
    base = dict(input_dim=D, hidden_dim=32, encoder_layers=2, encoder_heads=4, ff_dim=64, dropout=0.0,
                num_prototypes=4, attention_heads=2, attention_dim=16)
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **overrides) -> LogMILP:
    torch.manual_seed(seed)
    return LogMILP(tiny_config(**overrides))


def synthetic_bags(n: int = 16, w: int = 8, d: int = D, seed: int = 0):
    """n bags of w instances drawn near 4 'normal template' vectors; odd bags hold one special vector."""
    g = torch.Generator().manual_seed(seed)
    normals = F.normalize(torch.randn(4, d, generator=g), dim=-1)
    special = F.normalize(torch.randn(d, generator=g), dim=-1)
    x = normals[torch.randint(0, 4, (n, w), generator=g)] + 0.05 * torch.randn(n, w, d, generator=g)
    y = torch.arange(n) % 2
    where = torch.randint(0, w, (n,), generator=g)
    for b in range(n):
        if y[b]:
            x[b, where[b]] = special
    return x, torch.ones(n, w, dtype=torch.bool), y, where


def ragged_batch(lengths=(5, 3, 1), w: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), w, D, generator=g)
    mask = torch.arange(w)[None, :] < torch.tensor(lengths)[:, None]
    return x, mask


# ------------------------------------------------------------------------------------------------
# shapes and contract


def test_output_shapes_and_ranges():
    model = tiny_model().eval()
    x, mask = ragged_batch()
    out = model(x, mask)
    assert isinstance(out, LogMILPOutput)
    B, W, K, N = 3, 7, 2, 4
    assert out.logits.shape == (B, 2)
    assert out.prob.shape == (B,)
    assert out.attention.shape == (B, K, W)
    assert out.m.shape == (B, W)
    assert out.M_bag.shape == out.E_bag.shape == out.V_bag.shape == (B,)
    assert out.s.shape == (B, W, N)
    assert torch.allclose(out.prob, out.logits.softmax(-1)[:, 1])
    real_s = out.s[mask]
    assert (real_s >= 1 / 3 - 1e-6).all() and (real_s <= 1 + 1e-6).all()
    assert ((out.E_bag >= 0) & (out.E_bag <= 1 + 1e-6)).all()
    assert (out.m[~mask] == 0).all()
    # M_bag / V_bag are max / mean over the real instances only.
    for b in range(B):
        assert out.M_bag[b] == out.m[b, mask[b]].max()
        assert torch.isclose(out.V_bag[b], out.m[b, mask[b]].mean())


def test_attention_sums_to_one_on_real_and_zero_on_padding():
    model = tiny_model().train()  # dropout 0 but exercise the training path too
    x, mask = ragged_batch(lengths=(7, 4, 2, 1))
    att = model(x, mask).attention                                   # [B,K,W]
    assert torch.allclose(att.sum(-1), torch.ones(4, 2), atol=1e-6)
    assert (att.masked_select(~mask[:, None, :].expand_as(att)) == 0).all()
    assert (att[3, :, 0] == 1).all()                                  # a single-instance bag


def test_default_config_forward_runs():
    torch.manual_seed(0)
    model = LogMILP(ModelConfig(input_dim=D)).eval()
    x, mask = ragged_batch(lengths=(6, 2), w=6)
    out = model(x, mask)
    assert out.attention.shape == (2, 4, 6) and out.s.shape == (2, 6, 16)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])  # no_grad: PyTorch's fast path
@pytest.mark.parametrize("junk", ["randn", "nan", "huge"])
def test_padding_does_not_change_outputs(junk, grad):
    model = tiny_model().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 5, D, generator=g)
    mask = torch.ones(1, 5, dtype=torch.bool)
    pad = {"randn": torch.randn(1, 4, D, generator=g), "nan": torch.full((1, 4, D), float("nan")),
           "huge": torch.full((1, 4, D), 1e30)}[junk]
    x_pad = torch.cat([x, pad], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], dim=1)

    with torch.set_grad_enabled(grad):
        a, b = model(x, mask), model(x_pad, mask_pad)
    assert torch.allclose(a.prob, b.prob, rtol=1e-5, atol=1e-6)
    assert torch.allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    assert torch.allclose(a.attention, b.attention[:, :, :5], rtol=1e-5, atol=1e-6)
    assert (b.attention[:, :, 5:] == 0).all()
    for name in ("m", "M_bag", "E_bag", "V_bag"):
        assert torch.allclose(getattr(a, name), getattr(b, name)[..., :5] if name == "m" else getattr(b, name),
                              rtol=1e-5, atol=1e-6), name
    assert torch.allclose(a.s, b.s[:, :5], rtol=1e-5, atol=1e-6)


def test_batching_with_longer_bags_does_not_change_outputs():
    model = tiny_model().eval()
    x, mask = ragged_batch(lengths=(3, 7), w=7)
    together = model(x, mask)
    alone = model(x[:1, :3], mask[:1, :3])
    assert torch.allclose(together.prob[:1], alone.prob, rtol=1e-5, atol=1e-6)
    assert torch.allclose(together.attention[:1, :, :3], alone.attention, rtol=1e-5, atol=1e-6)


def test_single_instance_bags():
    model = tiny_model().eval()
    x = torch.randn(2, 1, D)
    out = model(x, torch.ones(2, 1, dtype=torch.bool))
    assert (out.attention == 1).all()
    assert torch.isfinite(out.prob).all()
    assert torch.allclose(out.M_bag, out.V_bag)


def test_input_validation():
    model = tiny_model()
    x, mask = ragged_batch()
    bad = mask.clone()
    bad[1] = False
    with pytest.raises(ValueError, match=r"bags \[1\] have no real instance"):
        model(x, bad)
    with pytest.raises(ValueError, match="bool"):
        model(x, mask.float())
    with pytest.raises(ValueError, match="input_dim"):
        model(x[..., :5], mask)
    with pytest.raises(ValueError, match=r"\[B, W\]"):
        model(x, mask[:, :3])
    short = tiny_model(max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        short(x, mask)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="encoder_heads"):
        ModelConfig(input_dim=8, hidden_dim=30, encoder_heads=4)
    with pytest.raises(ValueError, match="num_prototypes"):
        ModelConfig(input_dim=8, num_prototypes=0)
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(input_dim=8, dropout=1.0)
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"input_dim": 8, "hidden": 3})
    with pytest.raises(ValueError, match="attention_input"):
        ModelConfig(input_dim=8, attention_input="bogus")
    with pytest.raises(ValueError, match="history_window"):
        ModelConfig(input_dim=8, history_window=-1)
    cfg = tiny_config()
    assert ModelConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    # input_dim = 0 is a valid config ("fill in from the data") but not a buildable model.
    assert ModelConfig().input_dim == 0
    with pytest.raises(ValueError, match="input_dim"):
        LogMILP(ModelConfig())
    with pytest.raises(ValueError, match="input_dim"):
        ModelConfig(input_dim=-1)


def test_position_table_is_not_checkpointed():
    model = tiny_model()
    assert "pos" not in model.state_dict()
    assert "prototypes" in model.state_dict()


# ------------------------------------------------------------------------------------------------
# attention entropy and key-instance perturbation


def test_attention_entropy_hand_values():
    # Bag 0: 4 real instances; head 0 uniform (entropy log4/log4 = 1), head 1 one-hot (0).
    # Bag 1: 2 real + 2 padding; head 0 = (0.5, 0.5) → 1; head 1 = (0.9, 0.1) → H/log 2.
    # Bag 2: a single real instance → 0 by definition.
    att = torch.tensor([
        [[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0]],
        [[0.5, 0.5, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0]],
        [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]],
    ])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)  # 0.4690
    expected = torch.tensor([[1.0, 0.0], [1.0, h], [0.0, 0.0]])
    assert torch.allclose(attention_entropy(att, mask), expected, atol=1e-6)


def _hand_attention():
    # Bag 0: head 1 is sharper (entropy lower) → k* = 1, i* = 2.
    # Bag 1: last position is padding; head 0 is sharper → k* = 0, i* = 1.
    att = torch.tensor([
        [[0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.7, 0.1]],
        [[0.05, 0.9, 0.05, 0.0], [0.3, 0.3, 0.4, 0.0]],
    ])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3) + 1.0  # no zeros anywhere
    return x, mask, att


def test_perturb_zero_picks_key_head_and_instance():
    x, mask, att = _hand_attention()
    x_pert, mask_pert, head, index = perturb_key_instance(x, mask, att, mode="zero")
    assert head.tolist() == [1, 0]
    assert index.tolist() == [2, 1]
    assert (x_pert[0, 2] == 0).all() and (x_pert[1, 1] == 0).all()
    untouched = torch.ones(2, 4, dtype=torch.bool)
    untouched[0, 2] = untouched[1, 1] = False
    assert torch.equal(x_pert[untouched], x[untouched])
    assert torch.equal(mask_pert, mask)
    assert (x != 0).all()  # inputs not modified


def test_perturb_mask_removes_through_mask_and_falls_back_for_single_instance():
    x, mask, att = _hand_attention()
    x_pert, mask_pert, _, index = perturb_key_instance(x, mask, att, mode="mask")
    assert index.tolist() == [2, 1]
    assert torch.equal(x_pert, x)
    expected = mask.clone()
    expected[0, 2] = expected[1, 1] = False
    assert torch.equal(mask_pert, expected)

    # A one-instance bag cannot lose its instance: it is zeroed instead.
    x1 = torch.ones(1, 3, 2)
    m1 = torch.tensor([[False, True, False]])
    a1 = torch.tensor([[[0.0, 1.0, 0.0]]])
    xp, mp, _, i1 = perturb_key_instance(x1, m1, a1, mode="mask")
    assert i1.tolist() == [1]
    assert torch.equal(mp, m1)
    assert (xp[0, 1] == 0).all() and (xp[0, 0] == 1).all()
    with pytest.raises(ValueError, match="perturbation mode"):
        perturb_key_instance(x1, m1, a1, mode="drop")


def test_perturbation_never_picks_padding():
    # Garbage attention on a padded slot must not win.
    x = torch.ones(1, 3, 2)
    mask = torch.tensor([[True, True, False]])
    att = torch.tensor([[[0.4, 0.1, 0.9]]])
    assert perturb_key_instance(x, mask, att)[3].tolist() == [0]


# ------------------------------------------------------------------------------------------------
# ablations


@pytest.mark.parametrize("switch", [
    {}, {"use_prototypes": False}, {"use_candidate_bias": False}, {"positional_encoding": False},
    {"use_prototypes": False, "use_candidate_bias": False, "positional_encoding": False},
    {"relative_window": 3}, {"relative_window": 3, "positional_encoding": False},
    {"history_window": 0}, {"history_window": 2}, {"attention_input": "encoder"},
    {"attention_input": "local", "history_window": 0}, {"attention_input": "line"},
    {"pooled_values": "encoder"}, {"pooled_values": "local"},
    {"pooled_values": "local", "use_prototypes": False},          # nothing reads the encoder: not built
    {"pooled_values": "local", "use_prototypes": False, "relative_window": 2},
    {"witness_scores": True}, {"witness_scores": False}, {"evidence_counts": True},
    {"evidence_counts": True, "witness_scores": True, "bag_classifier": "heads"},
    {"localizer_head": True}, {"localizer_head": True, "witness_scores": True, "evidence_counts": True},
])
def test_ablation_switches_run_forward_and_backward(switch):
    model = tiny_model(**switch).train()
    x, mask = ragged_batch()
    y = torch.tensor([1, 0, 1])
    total, terms, out = compute_losses(model, x, mask, y, LossConfig())
    total.backward()
    assert math.isfinite(terms["loss"])
    assert all(p.grad is not None for p in model.parameters()), "every parameter should receive a gradient"
    if switch.get("use_prototypes") is False:
        assert not hasattr(model, "prototypes")
        assert out.s.shape == (3, 7, 0)
        assert (out.M_bag == 0).all() and (out.E_bag == 0).all() and (out.V_bag == 0).all()
        assert terms["proto"] == 0.0


@pytest.mark.parametrize("pooled_values", ["encoder", "local"])
@pytest.mark.parametrize("attention_input", ["encoder", "local", "line"])
def test_padding_invariance_for_every_pooling_choice(pooled_values, attention_input):
    model = tiny_model(pooled_values=pooled_values, attention_input=attention_input).eval()
    x, mask = ragged_batch(lengths=(4,), w=4)
    x_pad = torch.cat([x, torch.full((1, 3, D), float("nan"))], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], dim=1)
    a, b = model(x, mask), model(x_pad, mask_pad)
    assert torch.allclose(a.prob, b.prob, rtol=1e-5, atol=1e-6)
    assert torch.allclose(a.attention, b.attention[:, :, :4], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [{"witness_scores": True}, {"witness_scores": False},
                                     {"bag_classifier": "heads"}, {"bag_classifier": "heads", "witness_scores": True},
                                     {"evidence_counts": True},
                                     {"evidence_counts": True, "bag_classifier": "heads"},
                                     {"localizer_head": True}])
def test_padding_invariance_with_and_without_witness_scores(options):
    model = tiny_model(**options).eval()
    x, mask = ragged_batch(lengths=(4,), w=4)
    x_pad = torch.cat([x, torch.full((1, 3, D), float("nan"))], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], dim=1)
    a, b = model(x, mask), model(x_pad, mask_pad)
    assert torch.allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("option", ["witness_scores", "evidence_counts"])
def test_line_score_features_make_the_classifier_read_absolute_line_scores(option):
    """Softmax pooling is blind to a shift of every line's logit; the witness (max logit) and the
    evidence count (Σ σ(logit)) are not."""
    x, mask = ragged_batch()
    for on, should_change in ((False, False), (True, True)):
        model = tiny_model(**{option: on}).eval()
        before = model(x, mask)
        with torch.no_grad():
            model.attn_out_bias += 3.0                  # the same shift for every line of every head
        after = model(x, mask)
        assert torch.allclose(before.attention, after.attention, atol=1e-6)
        assert torch.allclose(before.logits, after.logits, atol=1e-6) != should_change, (option, on)


@pytest.mark.parametrize("bag_classifier", ["concat", "heads"])
def test_evidence_counts_tell_one_flagged_line_from_two(bag_classifier):
    """Softmax pooling averages: a window holding the same line twice pools exactly what it pools with the
    line once, so removing one of two anomalous lines cannot change P (SR fails on such windows). The
    soft count Σ_i σ(s_ik) is additive and tells the two apart."""
    line = torch.randn(1, 1, D)
    once, twice = line, line.repeat(1, 2, 1)                 # [1,1,D], [1,2,D]: lines only, no order or history
    for counts in (False, True):
        model = tiny_model(evidence_counts=counts, bag_classifier=bag_classifier, positional_encoding=False,
                           history_window=0, use_prototypes=False).eval()
        a = model(once, torch.ones(1, 1, dtype=torch.bool))
        b = model(twice, torch.ones(1, 2, dtype=torch.bool))
        assert torch.allclose(a.attention[..., 0], 2 * b.attention[..., 0], atol=1e-6)  # the same score per line
        same = torch.allclose(a.logits, b.logits, atol=1e-6)
        assert same != counts, f"evidence_counts={counts}"


def test_localizer_head_localizes_without_feeding_the_classifier():
    """With localizer_head the output's attention is the extra head's alone, and P does not read it: the
    localizer's weights change where it points, never the bag score."""
    x, mask = ragged_batch()
    model = tiny_model(localizer_head=True).eval()
    K = model.config.attention_heads
    before = model(x, mask)
    assert before.attention.shape == (3, 1, x.shape[1]) and before.scores.shape == (3, K + 1, x.shape[1])
    assert torch.allclose(before.attention.sum(dim=-1), torch.ones(3, 1))
    with torch.no_grad():
        model.attn_out_weight[K] = torch.randn_like(model.attn_out_weight[K]) * 5   # only the localizer's w
    after = model(x, mask)
    assert torch.equal(before.prob, after.prob)
    assert not torch.allclose(before.attention, after.attention)
    # and the pooling heads do feed P
    with torch.no_grad():
        model.attn_out_weight[0] = torch.randn_like(model.attn_out_weight[0]) * 5
    assert not torch.allclose(model(x, mask).prob, after.prob)


def test_heads_classifier_lets_one_head_decide_alone():
    """With bag_classifier="heads" the bag logit is logsumexp over per-head logits: one confident head
    raises P however the others score, and P never falls below what the most confident head says."""
    model = tiny_model(bag_classifier="heads").eval()
    x, mask = ragged_batch()
    with torch.no_grad():
        model.head_out_bias.zero_()
        base = model(x, mask)
        model.head_out_bias[1] = 20.0                   # head 1 alone becomes confident
        raised = model(x, mask)
    assert (base.prob < 0.99).all() and (raised.prob > 0.999).all()
    assert torch.allclose(raised.logits[:, 1], -raised.logits[:, 0])        # [−ℓ/2, ℓ/2]
    assert torch.allclose(torch.sigmoid(raised.logits[:, 1] * 2), raised.prob, atol=1e-6)


def test_heads_classifier_is_one_mlp_per_head_of_width_hidden_over_heads():
    cfg = tiny_config(bag_classifier="heads")
    model = LogMILP(cfg)
    K, d_in, d_c = cfg.attention_heads, cfg.hidden_dim + 3, cfg.hidden_dim // cfg.attention_heads
    assert not hasattr(model, "classifier")
    assert model.head_hidden_weight.shape == (K, d_in, d_c) and model.head_out_weight.shape == (K, d_c)
    # The documented size: K · (d_in·d_c weights + d_c hidden biases + d_c output weights + 1 output bias).
    size = sum(p.numel() for name, p in model.named_parameters() if name.startswith("head_"))
    assert size == K * (d_in * d_c + 2 * d_c + 1)
    with pytest.raises(ValueError, match="bag_classifier"):
        tiny_model(bag_classifier="vote")


def test_encoder_is_built_only_when_something_reads_it():
    assert hasattr(tiny_model(pooled_values="local"), "encoder")                   # the prototypes read it
    lean = tiny_model(pooled_values="local", use_prototypes=False, attention_input="line")
    assert not hasattr(lean, "encoder")
    assert not hasattr(tiny_model(pooled_values="local", use_prototypes=False, relative_window=2), "relative_bias")


def test_line_attention_ignores_the_history():
    # "line" scores each line alone: changing only an earlier line changes no other line's attention logit,
    # so the attention ratios among the untouched lines stay the same.
    model = tiny_model(attention_input="line", use_candidate_bias=False, history_window=3).eval()
    x, mask = ragged_batch(lengths=(6,), w=6)
    x2 = x.clone()
    x2[0, 0] += 1.0
    a, b = model(x, mask).attention, model(x2, mask).attention
    ratio = lambda att: att[0, :, 2:] / att[0, :, 1:2]                    # noqa: E731
    assert torch.allclose(ratio(a), ratio(b), rtol=1e-5)
    local = tiny_model(attention_input="local", use_candidate_bias=False, history_window=3).eval()
    a, b = local(x, mask).attention, local(x2, mask).attention
    assert not torch.allclose(ratio(a), ratio(b), rtol=1e-5)


def test_candidate_bias_changes_attention():
    x, mask = ragged_batch()
    with_bias = tiny_model(seed=5).eval()
    without = tiny_model(seed=5, use_candidate_bias=False).eval()
    without.load_state_dict(with_bias.state_dict())
    a, b = with_bias(x, mask), without(x, mask)
    assert not torch.allclose(a.attention, b.attention)
    assert torch.equal(a.m, b.m)


def test_positional_encoding_breaks_permutation_invariance():
    x, mask = ragged_batch(lengths=(6,), w=6)
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    plain = tiny_model(positional_encoding=False, history_window=0).eval()
    assert torch.allclose(plain(x, mask).prob, plain(x[:, perm], mask).prob, atol=1e-6)
    ordered = tiny_model(positional_encoding=True).eval()
    assert not torch.allclose(ordered(x, mask).prob, ordered(x[:, perm], mask).prob, atol=1e-6)


def _randomised_relative_model(**overrides) -> LogMILP:
    model = tiny_model(relative_window=2, **overrides)
    with torch.no_grad():
        model.relative_bias.normal_(0.0, 2.0)   # a trained-looking bias, not the zero initialisation
    return model.eval()


@pytest.mark.parametrize("grad", [False, True])
def test_relative_bias_keeps_padding_invariance_and_scores_alike_with_and_without_grad(grad):
    model = _randomised_relative_model()
    x, mask = ragged_batch()
    x_pad = torch.cat([x, torch.full((3, 4, D), float("nan"))], dim=1)
    mask_pad = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    with torch.set_grad_enabled(grad):
        a, b = model(x, mask), model(x_pad, mask_pad)
    assert torch.isfinite(a.prob).all(), "eval + no_grad must not take PyTorch's NaN-prone fused path"
    assert torch.allclose(a.prob, b.prob, rtol=1e-5, atol=1e-6)
    with torch.enable_grad():
        assert torch.allclose(model(x, mask).prob, a.prob, atol=1e-6)


def test_relative_bias_sees_direction():
    # Without absolute positions, only the relative bias can tell "A before B" from "B before A".
    model = _randomised_relative_model(positional_encoding=False, history_window=0)
    x, mask = ragged_batch(lengths=(6,), w=6)
    reversed_bag = x.flip(1)
    assert not torch.allclose(model(x, mask).prob, model(reversed_bag, mask).prob, atol=1e-6)
    plain = tiny_model(positional_encoding=False, history_window=0).eval()
    assert torch.allclose(plain(x, mask).prob, plain(reversed_bag, mask).prob, atol=1e-6)


def test_history_summary_sees_exactly_the_R_real_lines_before():
    model = tiny_model(history_window=2).eval()
    g = torch.Generator().manual_seed(4)
    h = torch.randn(1, 6, 32, generator=g)
    mask = torch.ones(1, 6, dtype=torch.bool)
    with torch.no_grad():
        base = model._history(h, mask)                                  # [1,6,32]
        assert (base[0, 0] == 0).all(), "the first line has no history"
        changed = h.clone()
        changed[0, 1] += 5.0                                            # line 1 is history of lines 2 and 3 only
        moved = (model._history(changed, mask) - base).abs().amax(-1)[0]
        assert moved[2] > 0 and moved[3] > 0
        assert (moved[[0, 1, 4, 5]] == 0).all()
        holed = mask.clone()
        holed[0, 1] = False                                             # a removed line is nobody's history
        a, b = model._history(h, holed), model._history(changed, holed)
        assert torch.equal(a, b) and (a[0, 1] == 0).all()


def test_history_summary_matches_its_definition():
    """c_i[d] = max over real j in i-R..i-1 of (U h_j)[d] + o_{i-j}[d], written out line by line."""
    R = 3
    model = tiny_model(history_window=R).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.history_offset.copy_(torch.randn(model.history_offset.shape, generator=g))
        h = torch.randn(2, 7, 32, generator=g)
        mask = torch.ones(2, 7, dtype=torch.bool)
        mask[0, 2] = False
        mask[1, 5:] = False                                             # padding
        got = model._history(h, mask)                                   # [2,7,32]
        u = model.history_key(h)
        for b in range(2):
            for i in range(7):
                seen = [i - k for k in range(1, R + 1) if i - k >= 0 and mask[b, i - k]]
                if not mask[b, i] or not seen:
                    assert (got[b, i] == 0).all()
                    continue
                # offset column R-k is line i-k (oldest first)
                want = torch.stack([u[b, i - k] + model.history_offset[:, R - k] for k in range(1, R + 1)
                                    if i - k in seen]).amax(0)
                assert torch.allclose(got[b, i], want, atol=1e-6), (b, i)


def test_history_lets_the_model_see_order_without_positions():
    x, mask = ragged_batch(lengths=(6,), w=6)
    model = tiny_model(positional_encoding=False, history_window=3).eval()
    assert not torch.allclose(model(x, mask).prob, model(x.flip(1), mask).prob, atol=1e-6)


def test_local_attention_input_scores_lines_before_the_encoder():
    x, mask = ragged_batch()
    encoder = tiny_model(seed=2, attention_input="encoder").eval()
    local = tiny_model(seed=2, attention_input="local").eval()
    local.load_state_dict(encoder.state_dict())                        # same parameters, other scoring input
    a, b = encoder(x, mask), local(x, mask)
    assert not torch.allclose(a.attention, b.attention)
    assert torch.allclose(b.attention.sum(-1), torch.ones(3, 2), atol=1e-6)
    assert (b.attention.masked_select(~mask[:, None, :].expand_as(b.attention)) == 0).all()


# ------------------------------------------------------------------------------------------------
# learning


def test_gradients_reach_prototypes():
    model = tiny_model().train()
    x, mask, y, _ = synthetic_bags(n=6)
    total, _, _ = compute_losses(model, x, mask, y, LossConfig())
    total.backward()
    g = model.prototypes.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_tiny_model_overfits_tiny_set():
    torch.manual_seed(0)
    model = LogMILP(tiny_config())
    x, mask, y, where = synthetic_bags()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cfg = LossConfig()
    for _ in range(300):
        total, terms, _ = compute_losses(model, x, mask, y, cfg)
        opt.zero_grad()
        total.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x, mask)
    assert ((out.prob > 0.5).long() == y).all()
    assert terms["cls"] < 1e-3 and terms["con"] < 1e-3 and terms["loss"] < 0.02
    # Some attention head puts its maximum on the special line of every positive bag. (Which head the
    # perturbation picks, the minimum-entropy one, is a per-bag choice; test_localize covers it.)
    pos = y.bool()
    head_argmax = out.attention.argmax(dim=-1)                       # [B,K]
    assert (head_argmax[pos] == where[pos][:, None]).any(dim=1).all()


def test_determinism_with_seed():
    def run():
        torch.manual_seed(123)
        model = LogMILP(tiny_config(dropout=0.1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, mask, y, _ = synthetic_bags(n=6)
        for _ in range(3):
            total, _, _ = compute_losses(model, x, mask, y, LossConfig())
            opt.zero_grad()
            total.backward()
            opt.step()
        return model.eval()(x, mask).prob.detach(), model.state_dict()

    (p1, s1), (p2, s2) = run(), run()
    assert torch.equal(p1, p2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
