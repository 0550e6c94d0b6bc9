"""The runner's pieces that need no cluster: Tune's search domains and the resource plan."""
from __future__ import annotations

import numpy as np
import pytest

from ray_logmilp.tuning import build_param_space, parse_search_space, plan_resources

GOOD = {"loss.lambda_p": {"type": "loguniform", "low": 0.01, "high": 1.0}}


def test_param_space_bounds_are_inclusive():
    pytest.importorskip("ray.tune")
    spec = parse_search_space({"space": {
        "model.num_prototypes": {"type": "logint", "low": 2, "high": 4},
        "train.batch_size": {"type": "int", "low": 8, "high": 9},
        "loss.lambda_c": {"type": "loguniform", "low": 0.1, "high": 10},
        "loss.delta_c": {"type": "uniform", "low": 0.1, "high": 0.9},
        "loss.perturbation": {"type": "choice", "values": ["zero", "mask"]},
    }})
    space = build_param_space(spec)
    np.random.seed(0)
    n = space["model.num_prototypes"].sample(size=300)
    assert set(n) == {2, 3, 4}
    assert set(space["train.batch_size"].sample(size=100)) == {8, 9}
    c = np.array(space["loss.lambda_c"].sample(size=300))
    assert c.min() >= 0.1 and c.max() <= 10 and (c < 1).mean() > 0.3       # log scale: half below 1
    d = np.array(space["loss.delta_c"].sample(size=100))
    assert d.min() >= 0.1 and d.max() <= 0.9
    assert set(space["loss.perturbation"].sample(size=50)) == {"zero", "mask"}


def test_plan_resources():
    spec = parse_search_space({"space": GOOD, "search": {"num_samples": 16}})
    assert plan_resources(spec, {"CPU": 2}) == (1.0, 0.0, 2)
    assert plan_resources(spec, {"CPU": 16, "GPU": 1}) == (1.0, 0.25, 4)      # fractional GPUs
    assert plan_resources(spec, {"CPU": 64, "GPU": 8}) == (1.0, 0.25, 16)     # capped by num_samples
    spec = parse_search_space({"space": GOOD, "search": {"max_concurrent": 3}, "resources": {"cpu": 2, "gpu": 0.5}})
    assert plan_resources(spec, {"CPU": 64, "GPU": 8}) == (2.0, 0.5, 3)
