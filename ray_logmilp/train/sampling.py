"""Which bags each rank trains on: seeded, class-balanced batches of the same shape on every rank."""
from __future__ import annotations

import numpy as np
import torch


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def epoch_indices(labels: np.ndarray, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Bag indices for one rank's epoch, [steps, batch_size]. Same shape on every rank.

    Each class gets half of every batch (the paper's weighted sampler, with the class mix fixed per batch
    rather than binomial: i.i.d. weighted draws sat at chance on the benchmark corpus). A split with a
    single class walks seeded permutations of all bags instead.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos and n_neg:
        pos_idx, neg_idx = np.flatnonzero(pos), np.flatnonzero(~pos)
        n_p = batch_size // 2 + int(rng.integers(0, 2)) * (batch_size % 2)   # odd sizes: alternate the extra
        take_pos = rng.choice(pos_idx, size=(steps, n_p), replace=True)
        take_neg = rng.choice(neg_idx, size=(steps, batch_size - n_p), replace=True)
        return rng.permuted(np.concatenate([take_pos, take_neg], axis=1), axis=1)
    total = steps * batch_size
    reps = -(-total // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:total].reshape(steps, batch_size)
