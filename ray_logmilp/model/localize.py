"""Instance-level localization (paper section III-F) with a counterfactual check.

For each bag: the attention head of minimum entropy (the key head), its top instances by weight, and how
much the bag score drops when the top one, the key instance, is removed (the per-bag quantity behind the
Success Rate, eq. 6). Training (L_con, L_attn), validation and evaluation use these same functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ray_logmilp.model.config import PERTURBATION_MODES
from ray_logmilp.model.logmilp import LogMILP, LogMILPOutput

__all__ = ["Localization", "attention_entropy", "key_head_attention", "localize", "perturb_key_instance",
           "remove_lines", "score_with_removal"]


def attention_entropy(attention: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Entropy −Σ_t A log(A + ε) of each head's attention over a bag's real instances, divided by
    log(W_real), the bag's real length (the paper's log W assumes unpadded bags).

    attention: [B,K,W]; mask: [B,W] bool. Returns [B,K] in [0, 1]; 0 for bags with a single instance,
    whose attention is necessarily one-hot. Differentiable: L_attn is its mean.
    """
    a = attention.masked_fill(~mask[:, None, :], 0.0)                                   # [B,K,W]
    ent = -(a * torch.log(a + eps)).sum(dim=-1)                                         # [B,K]
    n_real = mask.sum(dim=1).to(ent.dtype)                                              # [B]
    denom = torch.where(n_real >= 2, torch.log(n_real.clamp_min(2.0)), torch.full_like(n_real, math.inf))
    return ent / denom[:, None]


@torch.no_grad()
def key_head_attention(attention: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The key head k* = argmin_k attention entropy per bag, and its attention [B,W] with padding at −1
    (so padding never wins an argmax or a top-k). Ties break towards the lowest head index."""
    rows = torch.arange(attention.shape[0], device=attention.device)
    key_head = attention_entropy(attention, mask).argmin(dim=1)                        # [B]
    return key_head, attention[rows, key_head].masked_fill(~mask, -1.0)                # [B], [B,W]


@torch.no_grad()
def remove_lines(x: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, mode: str,
                 select: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of (x, mask) with line ``index[b]`` of each bag b removed (only where ``select[b]``, if given).

    ``mode="zero"`` sets the line's embedding to zero (the paper: it stays in the bag, empty); ``"mask"``
    drops it from the bag through the mask, except in a bag whose only real line it is (the bag would be
    empty), which falls back to zeroing. x: [B,W,d], mask: [B,W], index: [B], select: [B] bool.
    """
    if mode not in PERTURBATION_MODES:
        raise ValueError(f"perturbation mode must be one of {PERTURBATION_MODES}, got {mode!r}")
    rows = torch.arange(x.shape[0], device=x.device)
    if select is not None:
        rows, index = rows[select], index[select]
    x_out, mask_out = x.clone(), mask.clone()
    if mode == "zero":
        x_out[rows, index] = 0.0
    else:
        removable = mask[rows].sum(dim=1) >= 2                                         # [b]
        mask_out[rows, index] = ~removable        # stays True only where removal would empty the bag
        x_out[rows[~removable], index[~removable]] = 0.0
    return x_out, mask_out


@torch.no_grad()
def perturb_key_instance(
    x: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor, mode: str = "zero"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Remove each bag's key instance (Algorithm 1 lines 9–12) with :func:`remove_lines`.

    Key head k* = argmin_k attention entropy (the most decisive head); key instance i* = argmax attention
    in head k*. Returns (x_pert [B,W,d], mask_pert [B,W], key_head [B], key_index [B]); inputs are not
    modified. Ties break towards the lowest head / instance index.
    """
    key_head, key_att = key_head_attention(attention, mask)                            # [B], [B,W]
    key_index = key_att.argmax(dim=1)                                                  # [B]
    x_pert, mask_pert = remove_lines(x, mask, key_index, mode)
    return x_pert, mask_pert, key_head, key_index


@torch.no_grad()
def score_with_removal(model: LogMILP, x: torch.Tensor, mask: torch.Tensor, perturbation: str = "zero"
                       ) -> tuple[LogMILPOutput, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score bags, then score them again with each one's key instance removed, in eval mode (the model's
    previous mode is restored). Returns (output on the bags, P_pert [B], key_head [B], key_index [B])."""
    was_training = model.training
    model.eval()
    try:
        out = model(x, mask)
        x_pert, mask_pert, key_head, key_index = perturb_key_instance(x, mask, out.attention, perturbation)
        p_pert = model(x_pert, mask_pert).prob
    finally:
        model.train(was_training)
    return out, p_pert, key_head, key_index


@dataclass
class Localization:
    """Localization of one bag. Indices are row positions in the bag as given (padding excluded)."""

    head: int
    """Attention head of minimum entropy (k*)."""
    indices: list[int]
    """Top instances in that head, highest weight first; at most top_k, never more than the bag holds."""
    weights: list[float]
    """Their attention weights in head k*."""
    p_orig: float
    """Bag anomaly score."""
    p_pert: float
    """Bag score with the top instance (indices[0]) removed."""
    drop: float
    """p_orig − p_pert: how much the score relied on the top instance."""


@torch.no_grad()
def localize(model: LogMILP, x: torch.Tensor, mask: torch.Tensor, top_k: int = 3,
             perturbation: str = "zero") -> list[Localization]:
    """Localize anomalies in a batch of bags. x: [B,W,d], mask: [B,W] bool (True = real).

    Runs :func:`score_with_removal`: the model in eval mode, once on the bags and once with each bag's
    key instance removed (``perturbation``: "zero" or "mask", see :func:`remove_lines`).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    out, p_pert, key_head, key_index = score_with_removal(model, x, mask, perturbation)

    B = x.shape[0]
    rows = torch.arange(B, device=x.device)
    head_att = out.attention[rows, key_head].masked_fill(~mask, -1.0)                  # [B,W], padding last
    k = min(top_k, x.shape[1])
    # A stable sort breaks ties towards the lower index, like the argmax that chose the removed instance,
    # so indices[0] is the instance behind p_pert.
    top_w, top_i = head_att.sort(dim=1, descending=True, stable=True)
    top_w, top_i = top_w[:, :k], top_i[:, :k]                                            # [B,k]
    n_real = mask.sum(dim=1)

    # One transfer to host for everything, then plain Python.
    top_w, top_i, n_real = top_w.cpu().tolist(), top_i.cpu().tolist(), n_real.cpu().tolist()
    key_head, key_index = key_head.cpu().tolist(), key_index.cpu().tolist()
    p_orig, p_pert = out.prob.cpu().tolist(), p_pert.cpu().tolist()

    results = []
    for b in range(B):
        kb = min(k, n_real[b])
        indices, weights = top_i[b][:kb], top_w[b][:kb]
        if indices[0] != key_index[b]:
            # Only reachable under an exact tie for the top weight: list the removed instance first.
            if key_index[b] in indices:
                j = indices.index(key_index[b])
                indices[0], indices[j] = indices[j], indices[0]
                weights[0], weights[j] = weights[j], weights[0]
            else:
                indices[0] = key_index[b]
        results.append(Localization(head=key_head[b], indices=indices, weights=weights, p_orig=p_orig[b],
                                    p_pert=p_pert[b], drop=p_orig[b] - p_pert[b]))
    return results
