"""Evaluation metrics: bag-level detection (AUC, P/R/F1, validation threshold, PR curve) and instance-level
reliability (Loc@k, eq. 5; Success Rate, eq. 6), plus mean ± std over seeds.

Plain numpy; inputs may be lists, numpy arrays or (CPU) torch tensors. Labels are {0, 1}; scores are any
real numbers where higher means more anomalous. A prediction is positive when score >= threshold.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "roc_auc",
    "precision_recall_f1",
    "best_f1_threshold",
    "pr_curve",
    "loc_at_k",
    "success_rate",
    "mean_std",
]


def _as_1d(name: str, values, dtype) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _labels_scores(y, score) -> tuple[np.ndarray, np.ndarray]:
    y = _as_1d("y", y, np.int64)
    score = _as_1d("score", score, np.float64)
    if y.shape != score.shape:
        raise ValueError(f"y and score must have the same length, got {len(y)} and {len(score)}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must contain only 0 and 1")
    return y, score


def roc_auc(y, score) -> float:
    """Area under the ROC curve via the Mann–Whitney U statistic; tied scores get their average rank
    (a tie between a positive and a negative counts one half). NaN when y holds a single class."""
    y, score = _labels_scores(y, score)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # Average 1-based rank over each run of equal scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg_rank = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg_rank, counts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def precision_recall_f1(y, pred) -> tuple[float, float, float]:
    """(precision, recall, F1) of binary predictions; each is 0.0 where its denominator is 0."""
    y = _as_1d("y", y, np.int64)
    pred = _as_1d("pred", pred, np.int64)
    if y.shape != pred.shape:
        raise ValueError(f"y and pred must have the same length, got {len(y)} and {len(pred)}")
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def pr_curve(y, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score used as threshold (score >= t is positive).

    Returns (precision, recall, thresholds), thresholds in decreasing order, so recall is non-decreasing.
    Empty arrays for empty input.
    """
    y, score = _labels_scores(y, score)
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], y[order]
    tp = np.cumsum(t)                                                   # positives among the top i+1
    fp = np.cumsum(1 - t)
    # Keep the last index of each run of equal scores: a threshold admits all tied items at once.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.array([], dtype=np.int64)
    tp, fp, thresholds = tp[last], fp[last], s[last]
    n_pos = int(y.sum())
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos if n_pos else np.zeros_like(tp, dtype=np.float64)
    return precision.astype(np.float64), recall.astype(np.float64), thresholds


def best_f1_threshold(y, score) -> tuple[float, float]:
    """Threshold maximising F1 (select it on validation, apply it to test). Returns (threshold, f1).

    Candidates are the distinct scores; among equal F1 the highest threshold wins (fewest alarms).
    With no positive label every F1 is 0: returns (a value just above the largest score, 0.0), i.e.
    nothing is flagged.
    """
    y, score = _labels_scores(y, score)
    if len(y) == 0:
        raise ValueError("best_f1_threshold needs at least one scored bag")
    precision, recall, thresholds = pr_curve(y, score)
    if y.sum() == 0:
        return float(np.nextafter(score.max(), np.inf)), 0.0
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))      # first maximum = highest threshold, thresholds being decreasing
    return float(thresholds[best]), float(f1[best])


def loc_at_k(topk_indices: Sequence[Sequence[int]], true_sets: Sequence[set[int]], k: int) -> float:
    """Localization hit rate, eq. 5, over positive bags:

        Loc@k = Σ_B |S_B^top ∩ S_B^a| / Σ_B min(k, |S_B^a|)

    topk_indices[b]: the model's ranked candidate instances for bag b (only the first k count);
    true_sets[b]: the ground-truth anomalous instances of bag b. Pass positive bags only. NaN when the
    denominator is 0 (no bag has a labelled anomalous instance).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(topk_indices) != len(true_sets):
        raise ValueError(f"topk_indices and true_sets must have the same length, "
                         f"got {len(topk_indices)} and {len(true_sets)}")
    hits = sum(len(set(list(top)[:k]) & set(truth)) for top, truth in zip(topk_indices, true_sets))
    possible = sum(min(k, len(truth)) for truth in true_sets)
    return hits / possible if possible else math.nan


def success_rate(p_orig, p_pert, delta_sr: float) -> float:
    """Success Rate, eq. 6: fraction of (positive) bags whose score drops by more than δ_sr when the
    key instance is removed, P_orig − P_pert > δ_sr. Pass positive bags only; NaN for none."""
    p_orig = _as_1d("p_orig", p_orig, np.float64)
    p_pert = _as_1d("p_pert", p_pert, np.float64)
    if p_orig.shape != p_pert.shape:
        raise ValueError(f"p_orig and p_pert must have the same length, got {len(p_orig)} and {len(p_pert)}")
    if len(p_orig) == 0:
        return math.nan
    return float(np.mean(p_orig - p_pert > delta_sr))


def mean_std(values) -> tuple[float, float]:
    """(mean, sample standard deviation) over seeds, as reported "mean ± std"; std is 0 for one value
    and both are NaN for none."""
    arr = _as_1d("values", values, np.float64)
    if len(arr) == 0:
        return math.nan, math.nan
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return float(arr.mean()), std
