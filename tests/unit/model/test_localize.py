"""localize(): mechanics on a model with hand-set attention, then on a tiny trained LogMILP."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_logmilp.model.localize import Localization, localize
from ray_logmilp.model.losses import LossConfig, compute_losses
from ray_logmilp.evaluation.metrics import loc_at_k, success_rate
from ray_logmilp.model.logmilp import LogMILP, LogMILPOutput, ModelConfig


class FixedAttentionModel(nn.Module):
    """Returns a hand-set attention; the bag score is the sum of feature 0 over real instances."""

    def __init__(self, attention: torch.Tensor):
        super().__init__()
        self.attention = attention

    def forward(self, x, mask):
        prob = (x[..., 0] * mask).sum(dim=1)                             # [B]
        logits = torch.stack([-prob, prob], dim=-1)
        zeros = torch.zeros_like(mask, dtype=x.dtype)
        z = torch.zeros_like(prob)
        return LogMILPOutput(logits, prob, self.attention, zeros, z, z, z, zeros[..., None],
                             torch.log(self.attention).masked_fill(~mask[:, None, :], float("-inf")))


def _fixture():
    # Bag 0 (4 real): head 1 is the sharper head; ranking there is 2, 0, 3, 1.
    # Bag 1 (2 real + 2 padding): head 0 is sharper; ranking 1, 0 — padding never listed.
    att = torch.tensor([
        [[0.25, 0.25, 0.25, 0.25], [0.2, 0.05, 0.6, 0.15]],
        [[0.1, 0.9, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]],
    ])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    x = torch.zeros(2, 4, 3)
    x[0, :, 0] = torch.tensor([0.1, 0.2, 0.3, 0.05])                   # score 0.65
    x[1, :, 0] = torch.tensor([0.25, 0.5, 9.0, 9.0])                   # score 0.75 (padding ignored)
    return FixedAttentionModel(att), x, mask


def test_localize_hand_set_attention():
    model, x, mask = _fixture()
    locs = localize(model, x, mask, top_k=3)
    assert all(isinstance(loc, Localization) for loc in locs)
    a, b = locs
    assert a.head == 1 and a.indices == [2, 0, 3]
    assert a.weights == pytest.approx([0.6, 0.2, 0.15])
    # Removing instance 2 (feature 0.3): 0.65 → 0.35.
    assert a.p_orig == pytest.approx(0.65) and a.p_pert == pytest.approx(0.35)
    assert a.drop == pytest.approx(0.3)
    # Bag 1 holds 2 instances, so top-3 is capped at 2; removing instance 1 (0.5): 0.75 → 0.25.
    assert b.head == 0 and b.indices == [1, 0]
    assert b.weights == pytest.approx([0.9, 0.1])
    assert (b.p_orig, b.p_pert, b.drop) == pytest.approx((0.75, 0.25, 0.5))


def test_localize_mask_mode_and_top1():
    model, x, mask = _fixture()
    locs = localize(model, x, mask, top_k=1, perturbation="mask")
    assert [loc.indices for loc in locs] == [[2], [1]]
    assert [loc.p_pert for loc in locs] == pytest.approx([0.35, 0.25])


def test_localize_restores_training_mode_and_validates():
    model, x, mask = _fixture()
    model.train()
    localize(model, x, mask)
    assert model.training
    with pytest.raises(ValueError, match="top_k"):
        localize(model, x, mask, top_k=0)
    with pytest.raises(ValueError, match="perturbation mode"):
        localize(model, x, mask, perturbation="drop")


def test_localize_real_model_shapes_and_no_grad():
    torch.manual_seed(0)
    model = LogMILP(ModelConfig(hidden_dim=16, encoder_heads=2, ff_dim=32, num_prototypes=3, attention_heads=3), 8)
    x = torch.randn(3, 6, 8)
    mask = torch.arange(6)[None, :] < torch.tensor([[6], [2], [1]])
    locs = localize(model, x, mask, top_k=4)
    assert [len(loc.indices) for loc in locs] == [4, 2, 1]
    for loc, n in zip(locs, (6, 2, 1)):
        assert all(0 <= i < n for i in loc.indices)
        assert loc.weights == sorted(loc.weights, reverse=True)
        assert 0 <= loc.head < 3
        assert isinstance(loc.p_orig, float) and loc.drop == pytest.approx(loc.p_orig - loc.p_pert)
    assert locs[2].weights == pytest.approx([1.0])
    assert all(p.grad is None for p in model.parameters())


def test_trained_model_localizes_the_special_line():
    # 16 bags × 8 instances near 4 normal vectors; odd bags hold one special vector at a random position.
    g = torch.Generator().manual_seed(0)
    d = 16
    normals = F.normalize(torch.randn(4, d, generator=g), dim=-1)
    special = F.normalize(torch.randn(d, generator=g), dim=-1)
    x = normals[torch.randint(0, 4, (16, 8), generator=g)] + 0.05 * torch.randn(16, 8, d, generator=g)
    y = torch.arange(16) % 2
    where = torch.randint(0, 8, (16,), generator=g)
    pos = y.bool()
    x[pos, where[pos]] = special
    mask = torch.ones(16, 8, dtype=torch.bool)

    torch.manual_seed(0)
    model = LogMILP(ModelConfig(hidden_dim=32, ff_dim=64, dropout=0.0, num_prototypes=4, attention_heads=2), d)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        total, _, _ = compute_losses(model, x, mask, y, LossConfig())
        opt.zero_grad()
        total.backward()
        opt.step()

    locs = [loc for loc, p in zip(localize(model, x, mask, top_k=3), pos) if p]
    truth = [{int(w)} for w in where[pos]]
    # Chance is 3/8 for Loc@3 and 1/8 for Loc@1. Seeded runs give 7/8 and 6/8 here; the bounds leave a
    # bag of room for float differences across platforms. Top-1 is not perfect because the head is the
    # minimum-entropy one per bag, and a head that tracks a normal template is one-hot in a bag where
    # that template occurs once.
    assert loc_at_k([loc.indices for loc in locs], truth, k=3) >= 0.75
    assert loc_at_k([loc.indices for loc in locs], truth, k=1) >= 0.625
    assert success_rate([loc.p_orig for loc in locs], [loc.p_pert for loc in locs], delta_sr=0.5) == 1.0


@pytest.mark.parametrize("perturbation", ["zero", "mask"])
def test_sr_control_removes_a_random_real_line_other_than_the_key_one(perturbation):
    from ray_logmilp.evaluation.evaluate import remove_other_line

    # Bag 0: 4 real lines; bag 1: 2 real lines + padding (holding 9s, which must never be picked);
    # bag 2: a single line, which has no other line to remove.
    x = torch.zeros(3, 4, 3)
    x[0, :, 0] = torch.tensor([1.0, 2.0, 4.0, 8.0])                   # each line's removal drop is unique
    x[1, :, 0] = torch.tensor([1.0, 2.0, 9.0, 9.0])
    x[2, :, 0] = torch.tensor([5.0, 9.0, 9.0, 9.0])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    model = FixedAttentionModel(torch.zeros(3, 1, 4))
    key = torch.tensor([2, 0, 0])
    g = torch.Generator().manual_seed(0)
    removed = {0: set(), 1: set()}
    for _ in range(200):
        p = remove_other_line(model, x, mask, key, g, perturbation)
        assert p[2].item() == 5.0                                          # single line: score kept
        assert p[1].item() == 1.0                                          # only line 1 may go: 3 − 2
        drop0 = 15.0 - p[0].item()
        removed[0].add(drop0)
        removed[1].add(3.0 - p[1].item())
    assert removed[0] == {1.0, 2.0, 8.0}                                   # every other line, never the key (4)
    assert removed[1] == {2.0}
