"""LogMILP model: shapes, padding invariance, attention, perturbation, ablations, learning, determinism."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ray_logmilp.model.losses import LossConfig, compute_losses
from ray_logmilp.config import ConfigError
from ray_logmilp.model.localize import attention_entropy, perturb_key_instance
from ray_logmilp.model.logmilp import MAX_LEN, LogMILP, LogMILPOutput, ModelConfig

D = 16


def tiny_config(**overrides) -> ModelConfig:
    base = dict(hidden_dim=32, encoder_layers=2, encoder_heads=4, ff_dim=64, dropout=0.0,
                num_prototypes=4, attention_heads=2)
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **overrides) -> LogMILP:
    torch.manual_seed(seed)
    return LogMILP(tiny_config(**overrides), D)


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
    model = LogMILP(ModelConfig(), D).eval()
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
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, MAX_LEN + 1, D), torch.ones(1, MAX_LEN + 1, dtype=torch.bool))


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="hidden_dim.*encoder_heads"):
        ModelConfig(hidden_dim=32, encoder_heads=5)
    with pytest.raises(ConfigError, match="hidden_dim.*even"):
        ModelConfig(hidden_dim=33, encoder_heads=3)
    with pytest.raises(ConfigError, match="num_prototypes"):
        ModelConfig(num_prototypes=0)
    with pytest.raises(ConfigError, match="dropout"):
        ModelConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="history_window"):
        ModelConfig(history_window=-1)


def test_the_input_size_comes_with_the_model_not_the_config():
    assert "input_dim" not in {f.name for f in dataclasses.fields(ModelConfig)}
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="input_dim"):
            LogMILP(ModelConfig(), bad)
    assert tiny_model().input_dim == D


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
    {}, {"use_prototypes": False}, {"use_candidate_bias": False},
    {"use_prototypes": False, "use_candidate_bias": False},       # nothing reads the encoder: not built
    {"history_window": 0}, {"history_window": 2}, {"use_prototypes": False, "history_window": 0},
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


def test_encoder_is_built_only_when_something_reads_it():
    assert hasattr(tiny_model(), "encoder")                                        # the prototypes read it
    assert not hasattr(tiny_model(use_prototypes=False), "encoder")


def test_heads_score_the_local_features_and_the_encoder_feeds_only_the_prototypes():
    # Without the candidate bias nothing from the encoder reaches the heads: changing its weights moves
    # P (through F_p) but not the attention.
    x, mask = ragged_batch()
    model = tiny_model(seed=2, use_candidate_bias=False).eval()
    before = model(x, mask)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.5)
    after = model(x, mask)
    assert torch.equal(before.attention, after.attention)
    assert not torch.allclose(before.prob, after.prob)


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
    ordered = tiny_model(history_window=0).eval()
    assert not torch.allclose(ordered(x, mask).prob, ordered(x[:, perm], mask).prob, atol=1e-6)


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
    model = LogMILP(tiny_config(), D)
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
        model = LogMILP(tiny_config(dropout=0.1), D)
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
