"""Evaluation: bag-level detection and instance-level localization, laid out like the paper's tables.

Instance labels are read only in evaluation (here and in the report): never in training, threshold choice or
model selection.
The threshold is the one the bundle carries (max F1 on validation), applied unchanged to the test split.
The report (tables, figures, example lines) is ``ray_logmilp.evaluation.report``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ray_logmilp.bundle import Bundle
from ray_logmilp.evaluation.metrics import loc_at_k, mean_std, precision_recall_f1, roc_auc, success_rate
from ray_logmilp.ingest.prepared import PreparedData, collate
from ray_logmilp.model.localize import localize, remove_lines
from ray_logmilp.model.logmilp import MAX_LEN

log = logging.getLogger(__name__)


@torch.no_grad()
def remove_other_line(model, x: torch.Tensor, mask: torch.Tensor, key_index: torch.Tensor,
                      generator: torch.Generator, perturbation: str = "zero") -> torch.Tensor:
    """P [B] with one random real line *other than* each bag's key instance removed, the same way SR
    removes the key instance (zeroed, or dropped through the mask). The control for SR: if removing any
    line lowered P as much as removing the key one, SR would say nothing about localization (a model
    can learn to react to the perturbation itself, e.g. to an all-zero embedding). Bags with a single
    line have no other line and keep their score."""
    B, W = mask.shape
    rows = torch.arange(B, device=x.device)
    others = mask.clone()
    others[rows, key_index] = False
    has_other = others.any(dim=1)                                                      # [B]
    # A uniform draw among the other real lines: the argmax of uniform noise restricted to them.
    noise = torch.rand(B, W, generator=generator).to(x.device).masked_fill(~others, -1.0)
    pick = noise.argmax(dim=1)                                                         # [B]
    x_ctrl, mask_ctrl = remove_lines(x, mask, pick, perturbation, select=has_other)
    return model(x_ctrl, mask_ctrl).prob


def evaluate(bundle: Bundle, data: PreparedData, *, top_k: list[int], delta_sr: float, split: str = "test",
             batch_size: int = 128, perturbation: str = "zero", control_seed: int = 0) -> dict[str, Any]:
    """Metrics of one bundle on one split. Returns plain floats plus per-bag arrays under ``_raw``.

    Besides SR, ``sr_other_line`` is SR's control: the same test with a random other line removed
    instead of the key instance (``remove_other_line``), drawn with ``control_seed``."""
    bags = data.splits[split]
    if len(bags) == 0:
        raise ValueError(f"the {split} split has no bags")
    model = bundle.model
    device = next(model.parameters()).device
    embeddings = torch.from_numpy(data.embeddings).to(device)
    k_max = max(top_k)
    p_orig = np.empty(len(bags))
    p_pert = np.empty(len(bags))
    p_other = np.empty(len(bags))
    generator = torch.Generator().manual_seed(control_seed)
    tops: list[list[int]] = [[] for _ in range(len(bags))]
    weights: list[list[float]] = [[] for _ in range(len(bags))]
    heads = np.zeros(len(bags), np.int64)
    order = np.argsort(bags.lengths(), kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        x, mask, _, _ = collate(bags, rows, embeddings, MAX_LEN)
        located = localize(model, x, mask, top_k=k_max, perturbation=perturbation)
        for row, loc in zip(rows, located):
            p_orig[row], p_pert[row] = loc.p_orig, loc.p_pert
            tops[row], weights[row], heads[row] = loc.indices, loc.weights, loc.head
        key_index = torch.tensor([loc.indices[0] for loc in located], device=device)
        p_other[rows] = remove_other_line(model, x, mask, key_index, generator, perturbation).float().cpu().numpy()
    y = bags.labels.astype(int)
    threshold = bundle.threshold
    pred = (p_orig >= threshold).astype(int)
    precision, recall, f1 = precision_recall_f1(y, pred)
    out: dict[str, Any] = {
        "bags": int(len(bags)), "positive_bags": int((y == 1).sum()), "threshold": threshold,
        "auc": float(roc_auc(y, p_orig)) if len(np.unique(y)) == 2 else float("nan"),
        "precision": float(precision), "recall": float(recall), "f1": float(f1),
    }
    pos = np.flatnonzero(y == 1)
    out["sr"] = float(success_rate(p_orig[pos], p_pert[pos], delta_sr)) if len(pos) else float("nan")
    out["sr_other_line"] = float(success_rate(p_orig[pos], p_other[pos], delta_sr)) if len(pos) else float("nan")
    # Localization needs the hidden line labels: evaluation only.
    true_sets = [set(np.flatnonzero(bags.instance_labels[bags.instances(int(i))] == 1).tolist()) for i in pos]
    labelled = [j for j, s in enumerate(true_sets) if s]
    # SR split by how many labelled lines a bag holds: with two or more, removing one leaves the others,
    # so a model whose score follows the evidence rightly keeps the window anomalous.
    for name, chosen in (("sr_one_labelled", [j for j, s in enumerate(true_sets) if len(s) == 1]),
                         ("sr_several_labelled", [j for j, s in enumerate(true_sets) if len(s) > 1])):
        group = pos[chosen]
        out[name] = float(success_rate(p_orig[group], p_pert[group], delta_sr)) if len(group) else float("nan")
    for k in top_k:
        out[f"loc@{k}"] = (float(loc_at_k([tops[pos[j]][:k] for j in labelled], [true_sets[j] for j in labelled], k))
                           if labelled else float("nan"))
    out["_raw"] = {"y": y, "p_orig": p_orig, "p_pert": p_pert, "p_other": p_other, "tops": tops, "weights": weights,
                   "heads": heads}
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """mean ± std over seeds of every scalar metric."""
    keys = [k for k, v in runs[0].items() if not k.startswith("_") and isinstance(v, (int, float))]
    out = {}
    for k in keys:
        mean, std = mean_std([r[k] for r in runs])
        out[k] = {"mean": float(mean), "std": float(std)}
    return out


def strip_raw(result: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics of an :func:`evaluate` result, without its per-bag arrays."""
    return {k: v for k, v in result.items() if not k.startswith("_")}
