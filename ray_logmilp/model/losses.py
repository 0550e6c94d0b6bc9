"""LogMILP training objective (paper eq. 3–4, Algorithm 1 lines 2–15).

    L_total = L_cls + λ_p L_proto + λ_a L_attn + λ_c L_con (+ λ_l L_loc + λ_i L_inst, ours)

All terms use bag labels only. ``compute_losses`` returns the total for back-propagation: Algorithm 1
line 16 writes ∇L_cls, but the ablation in the paper's Table III only changes anything if the auxiliary
terms reach the gradient, so we follow ARCHITECTURE.md and backpropagate the total.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ray_logmilp.model.config import LossConfig
from ray_logmilp.model.localize import attention_entropy, key_head_attention, perturb_key_instance
from ray_logmilp.model.logmilp import LogMILP, LogMILPOutput

__all__ = [
    "LossConfig",
    "focal_loss",
    "proto_loss",
    "attention_entropy_loss",
    "consistency_loss",
    "instance_loss",
    "compute_losses",
]

# γ of the focal loss (Lin et al.'s default): down-weights bags the model already gets right.
FOCAL_GAMMA = 2.0
# Weight of the positive class (negatives get 1 − α). Neutral, because training already draws positive and
# negative bags equally often; Lin et al.'s 0.25 on top of that under-weighted positives and stalled learning.
FOCAL_ALPHA = 0.5
# How many of a positive bag's most-attended lines L_loc tries removing to find the one that matters.
LOCALIZATION_CANDIDATES = 4


def _masked_mean(values: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Mean of values[select]; 0 (not NaN) when nothing is selected, so a one-class batch is harmless."""
    select = select.to(values.dtype)
    return (values * select).sum() / select.sum().clamp_min(1.0)


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float = FOCAL_GAMMA,
               alpha: float = FOCAL_ALPHA) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) on two-class logits [B,2] with labels y [B] ∈ {0,1}; mean over the batch.

    FL = −α_t (1 − p_t)^γ log p_t, p_t = P(true class), α_t = α for positives and 1 − α for negatives.
    """
    y = y.long()
    log_p_t = F.log_softmax(logits, dim=-1).gather(1, y[:, None]).squeeze(1)           # [B]
    p_t = log_p_t.exp()
    loss = -((1.0 - p_t) ** gamma) * log_p_t                                            # [B]
    loss = torch.where(y == 1, alpha, 1.0 - alpha) * loss
    return loss.mean()


def proto_loss(M_bag: torch.Tensor, E_bag: torch.Tensor, y: torch.Tensor, delta_p: float = 0.8,
               delta_e: float = 0.5) -> torch.Tensor:
    """Prototype regularisation (Algorithm 1 lines 5–7).

    mean_pos max(0, Δ_p − M_bag) + mean_neg max(0, Δ_e − E_bag) (the paper's w_ent = 1); an empty group
    contributes 0.
    """
    pos = y.bool()
    l_pos = _masked_mean(F.relu(delta_p - M_bag), pos)
    l_neg = _masked_mean(F.relu(delta_e - E_bag), ~pos)
    return l_pos + l_neg


def attention_entropy_loss(attention: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_attn (Algorithm 1 line 8): the mean over bags and heads of :func:`attention_entropy`.

    attention: [B,K,W]; mask: [B,W]. Bags with one instance count as 0.
    """
    return attention_entropy(attention, mask).mean()


def consistency_loss(p_orig: torch.Tensor, p_pert: torch.Tensor, y: torch.Tensor,
                     delta_c: float = 0.5) -> torch.Tensor:
    """Perturbation consistency (eq. 3, Algorithm 1 line 14): mean over positive bags of
    max(0, Δ_c − (P_orig − P_pert)); 0 when the batch has no positive bag."""
    return _masked_mean(F.relu(delta_c - (p_orig - p_pert)), y.bool())


def instance_loss(scores: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Max-pooling multi-instance loss on line scores (mi-Net; see ``LossConfig.lambda_i``).

    scores: [B,K,W] line logits of K heads (padding may hold anything, −inf included); mask: [B,W];
    y: [B]. Each head's bag score is its highest real line's score, and the loss is the binary
    cross-entropy of that score against the bag label, averaged over heads, then over bags.

    The maximum for negative bags too, not the mean over their lines: with the mean, scoring one fixed
    line of *every* bag high (the first, which has no history) costs a negative bag only 1/W of it and
    satisfies every positive bag, a shortcut the heads found at once (docs/experiments.md).
    """
    top = scores.masked_fill(~mask[:, None, :], float("-inf")).max(dim=-1).values      # [B,K]
    target = y.to(top.dtype)[:, None].expand_as(top)                                    # [B,K]
    return F.binary_cross_entropy_with_logits(top, target)


def loss_config_for_epoch(cfg: LossConfig, epoch: int) -> LossConfig:
    """The loss config in force at ``epoch`` (0-based): λ_p, λ_a, λ_c, λ_l ramped over the warm-up epochs
    (λ_i is not: see its docstring)."""
    if cfg.regularizer_warmup_epochs == 0:
        return cfg
    ramp = min(1.0, epoch / cfg.regularizer_warmup_epochs)
    return dataclasses.replace(cfg, lambda_p=cfg.lambda_p * ramp, lambda_a=cfg.lambda_a * ramp,
                               lambda_c=cfg.lambda_c * ramp, lambda_l=cfg.lambda_l * ramp)


@torch.no_grad()
def localization_targets(model: LogMILP, x: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor,
                         candidates: int = LOCALIZATION_CANDIDATES) -> tuple[torch.Tensor, torch.Tensor]:
    """For each bag, the line among its ``candidates`` most-attended (key head) whose removal lowers P most.

    Each candidate is dropped through the mask, so it also leaves every other line's history summary;
    the lines after an anomaly that merely *carry* it in their history then barely move P when removed,
    while removing the anomaly itself does. x: [B,W,d], mask: [B,W], attention: [B,K,W] (no grad).
    Returns (key_head [B], target [B]); bags with one real line get their only line.
    """
    B, W = mask.shape
    rows = torch.arange(B, device=x.device)
    key_head, key_att = key_head_attention(attention, mask)                            # [B], [B,W]
    M = min(candidates, W)
    cand = key_att.topk(M, dim=1).indices                                              # [B,M]
    valid = mask.gather(1, cand) & (mask.sum(dim=1, keepdim=True) >= 2)                # [B,M]
    x_rep = x.repeat_interleave(M, dim=0)                                              # [B·M,W,d]
    mask_rep = mask.repeat_interleave(M, dim=0).clone()                                # [B·M,W]
    flat = torch.arange(B * M, device=x.device)
    mask_rep[flat, cand.reshape(-1)] = ~valid.reshape(-1)   # invalid candidates stay (and are not chosen)
    p = model(x_rep, mask_rep).prob.view(B, M)                                         # [B,M]
    p = p.masked_fill(~valid, float("inf"))
    target = cand[rows, p.argmin(dim=1)]                                               # [B]
    return key_head, target


def localization_loss(attention: torch.Tensor, key_head: torch.Tensor, target: torch.Tensor,
                      y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean over positive bags of −log A[key head, target]: attention towards the line that matters."""
    rows = torch.arange(attention.shape[0], device=attention.device)
    nll = -torch.log(attention[rows, key_head, target] + eps)                           # [B]
    return _masked_mean(nll, y.bool())


def compute_losses(
    model: LogMILP, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, float], LogMILPOutput]:
    """One training step's objective (Algorithm 1 lines 2–15).

    With consistency on, a first pass without gradient picks each bag's key instance (argmin/argmax
    picks need no gradient); then ONE differentiable pass runs the original and the perturbed bags
    stacked along the batch axis, giving P_orig and P_pert together. One graph-building forward per
    backward is what DDP requires (two forwards through the same parameters before one backward make
    DDP's reducer mark parameters ready twice), and the stacked pass is also cheaper than two. In train
    mode the probe and the stacked pass draw different dropout masks; the hinge tolerates that noise.

    With λ_l > 0, L_loc adds one more no-grad pass over the positive bags' candidate removals
    (``localization_targets``); its gradient flows through the stacked pass's attention.
    L_inst (λ_i > 0) reads the line scores of the same pass; it needs no extra forward.
    Returns (total loss with grad, {"loss","cls","proto","attn","con","loc","inst": float}, output on the
    original bags).
    L_proto is 0 when the model has no prototypes (F_p would be constant zeros).
    """
    B = x.shape[0]
    if cfg.use_consistency:
        with torch.no_grad():
            probe = model(x, mask)
        x_pert, mask_pert, _, _ = perturb_key_instance(x, mask, probe.attention, cfg.perturbation)
        both = model(torch.cat([x, x_pert]), torch.cat([mask, mask_pert]))   # [2B, ...]
        out = LogMILPOutput(*(t[:B] for t in both))
        p_pert = both.prob[B:]
    else:
        out = model(x, mask)
    zero = out.logits.new_zeros(())

    l_cls = focal_loss(out.logits, y)
    l_proto = proto_loss(out.M_bag, out.E_bag, y, cfg.delta_p, cfg.delta_e) if model.config.use_prototypes else zero
    l_attn = attention_entropy_loss(out.attention, mask)
    # The gradient flows through both P_orig and P_pert: for positive bags raising P_orig agrees with L_cls.
    l_con = consistency_loss(out.prob, p_pert, y, cfg.delta_c) if cfg.use_consistency else zero

    if cfg.lambda_l > 0 and bool((y == 1).any()):
        pos = torch.nonzero(y == 1).flatten()
        att = (probe.attention if cfg.use_consistency else out.attention.detach())[pos]
        key_head, target = localization_targets(model, x[pos], mask[pos], att)
        l_loc = localization_loss(out.attention[pos], key_head, target, y[pos])
    else:
        l_loc = zero

    l_inst = instance_loss(out.scores, mask, y) if cfg.lambda_i > 0 else zero

    total = (l_cls + cfg.lambda_p * l_proto + cfg.lambda_a * l_attn + cfg.lambda_c * l_con
             + cfg.lambda_l * l_loc + cfg.lambda_i * l_inst)
    # One device sync for all the logged numbers instead of one per term.
    values = torch.stack([total, l_cls, l_proto, l_attn, l_con, l_loc, l_inst]).detach().cpu().tolist()
    terms = dict(zip(("loss", "cls", "proto", "attn", "con", "loc", "inst"), values))
    return total, terms, out
