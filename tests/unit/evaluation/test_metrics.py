"""Metrics pinned on hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ray_logmilp.evaluation.metrics import (
    best_f1_threshold,
    loc_at_k,
    mean_std,
    pr_curve,
    precision_recall_f1,
    roc_auc,
    success_rate,
)


def test_roc_auc_without_ties():
    # Pairs (pos, neg): 0.35>0.1 ✓, 0.35>0.4 ✗, 0.8>0.1 ✓, 0.8>0.4 ✓ → 3/4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_roc_auc_ties_count_half():
    # Pairs: pos 0.5 vs neg 0.5 tie → ½, pos 0.5 vs neg 0.2 → 1, pos 0.9 vs both → 2. 3.5 / 4
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    # All scores equal: every pair is a tie.
    assert roc_auc([0, 1, 1, 0], [0.3] * 4) == pytest.approx(0.5)


def test_roc_auc_extremes_and_single_class():
    assert roc_auc([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))
    assert roc_auc(torch.tensor([0, 1]), torch.tensor([0.2, 0.7])) == 1.0


def test_precision_recall_f1():
    # tp = 2 (idx 0, 4), fp = 1 (idx 2), fn = 1 (idx 1) → P = R = F1 = 2/3
    p, r, f1 = precision_recall_f1([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert (p, r, f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # tp = 1, fp = 0, fn = 1 → P = 1, R = ½, F1 = 2/3
    assert precision_recall_f1([1, 1, 0], [1, 0, 0]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert precision_recall_f1([1, 0], [0, 0]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same length"):
        precision_recall_f1([1, 0], [1])


def test_best_f1_threshold():
    # Threshold (score >= t):  0.8 → P 1, R ½, F1 .667;  0.75 → P ½, R ½, F1 .5;
    # 0.7 → P ⅔, R 1, F1 .8;  0.2 → P ½, R 1, F1 .667;  0.1 → P .4, R 1, F1 .571.  Best: 0.7 with 0.8.
    t, f1 = best_f1_threshold([0, 0, 1, 1, 0], [0.1, 0.2, 0.7, 0.8, 0.75])
    assert t == pytest.approx(0.7)
    assert f1 == pytest.approx(0.8)


def test_best_f1_threshold_prefers_highest_threshold_on_ties_and_handles_no_positives():
    # 0.9 → P 1, R ½, F1 ⅔;  0.8 → P ½, R ½, F1 ½;  0.1 → P ½, R 1, F1 ⅔  → tie, 0.9 wins.
    t, f1 = best_f1_threshold([1, 0, 1, 0], [0.9, 0.8, 0.1, 0.1])
    assert (t, f1) == pytest.approx((0.9, 2 / 3))
    t, f1 = best_f1_threshold([0, 0], [0.3, 0.6])
    assert f1 == 0.0 and t > 0.6


def test_pr_curve_groups_ties():
    # Scores 0.9 (pos), 0.5 (pos), 0.5 (neg), 0.1 (neg): thresholds 0.9, 0.5, 0.1.
    precision, recall, thresholds = pr_curve([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1])
    np.testing.assert_allclose(thresholds, [0.9, 0.5, 0.1])
    np.testing.assert_allclose(precision, [1.0, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.5, 1.0, 1.0])


def test_loc_at_k_three_bags():
    # k = 3.  Bag A: top {0,1,2} ∩ {1} = 1 hit, min(3,1) = 1.
    #         Bag B: top {5,3,4} ∩ {3,4,9,10} = 2 hits, min(3,4) = 3.
    #         Bag C: top {7,1,2} ∩ {8} = 0 hits, min(3,1) = 1.
    # Loc@3 = (1 + 2 + 0) / (1 + 3 + 1) = 3/5
    top = [[0, 1, 2], [5, 3, 4], [7, 1, 2]]
    truth = [{1}, {3, 4, 9, 10}, {8}]
    assert loc_at_k(top, truth, k=3) == pytest.approx(0.6)
    # k = 1 uses only the first candidate: hits 0 + 0 + 0; denominator 1 + 1 + 1 → 0.
    assert loc_at_k(top, truth, k=1) == 0.0
    # k = 2: A {0,1} → 1, B {5,3} → 1, C {7,1} → 0;  denominator 1 + 2 + 1 → 2/4
    assert loc_at_k(top, truth, k=2) == pytest.approx(0.5)


def test_loc_at_k_edge_cases():
    # Fewer candidates than k (short bag): counted as they are. Hits 1, denominator min(3, 2) = 2.
    assert loc_at_k([[4]], [{4, 5}], k=3) == pytest.approx(0.5)
    # A bag with no labelled anomalous instance adds nothing to either sum.
    assert loc_at_k([[0, 1], [2, 3]], [{0}, set()], k=2) == pytest.approx(1.0)
    assert math.isnan(loc_at_k([[0]], [set()], k=1))
    with pytest.raises(ValueError, match="same length"):
        loc_at_k([[0]], [], k=1)
    with pytest.raises(ValueError, match="k must be"):
        loc_at_k([[0]], [{0}], k=0)


def test_success_rate():
    # Drops 0.6, 0.05, 0.6 against δ = 0.5 → 2 of 3.
    assert success_rate([0.9, 0.8, 0.7], [0.3, 0.75, 0.1], delta_sr=0.5) == pytest.approx(2 / 3)
    # Strict inequality: a drop of exactly δ does not count (values exact in binary).
    assert success_rate([1.0], [0.5], delta_sr=0.5) == 0.0
    # A rise is never a success.
    assert success_rate([0.2], [0.9], delta_sr=0.0) == 0.0
    assert math.isnan(success_rate([], [], delta_sr=0.1))


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))   # sample std: sqrt(2/2)
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([])
    assert math.isnan(m) and math.isnan(s)
