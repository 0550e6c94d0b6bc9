"""The training sampler (train.sampling.epoch_indices): every rank gets the same number of steps, and balanced
batches always hold the two classes in equal parts (a fixed mix, not a binomial one: see the comment there)."""
import numpy as np
import pytest

from ray_logmilp.train.sampling import epoch_indices


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    return (rng.random(1000) < 0.2).astype(np.int8)     # 20% positive, like a real window corpus


def test_balanced_batches_hold_half_positives(labels):
    batches = epoch_indices(labels, steps=50, batch_size=32, seed=3)
    assert batches.shape == (50, 32)
    assert (labels[batches].sum(axis=1) == 16).all()


def test_odd_batch_size_keeps_the_classes_within_one(labels):
    batches = epoch_indices(labels, steps=40, batch_size=7, seed=1)
    positives = labels[batches].sum(axis=1)
    assert set(positives.tolist()) <= {3, 4}


def test_positions_in_a_batch_are_shuffled(labels):
    batches = epoch_indices(labels, steps=200, batch_size=8, seed=0)
    first_is_positive = labels[batches[:, 0]]
    assert 0 < first_is_positive.mean() < 1               # not "positives first" in every batch


def test_same_seed_same_batches_other_seed_other_batches(labels):
    a = epoch_indices(labels, 10, 16, seed=5)
    assert np.array_equal(a, epoch_indices(labels, 10, 16, seed=5))
    assert not np.array_equal(a, epoch_indices(labels, 10, 16, seed=6))


def test_one_class_only_falls_back_to_permutations():
    labels = np.zeros(50, np.int8)
    batches = epoch_indices(labels, steps=5, batch_size=10, seed=0)
    assert sorted(batches.ravel().tolist()) == list(range(50))
