"""Instance-level localization (paper section III-F) with a counterfactual check.

For each bag: the attention head of minimum entropy, its top-k instances by weight, and how much the
bag score drops when the top instance is removed (the per-bag quantity behind the Success Rate, eq. 6).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ray_logmilp.model.logmilp import LogMILP, perturb_key_instance

__all__ = ["Localization", "localize"]


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

    Runs the model in eval mode (restoring its previous mode afterwards) and twice per batch: once on
    the bags, once with each bag's key instance removed (``perturbation``: "zero" or "mask", see
    :func:`ray_logmilp.model.perturb_key_instance`).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    was_training = model.training
    model.eval()
    try:
        out = model(x, mask)
        x_pert, mask_pert, key_head, key_index = perturb_key_instance(x, mask, out.attention, perturbation)
        p_pert = model(x_pert, mask_pert).prob
    finally:
        model.train(was_training)

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
