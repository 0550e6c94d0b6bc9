"""What a trial sees and reports, without Ray: the objective and the label-blanked data."""
from __future__ import annotations

import numpy as np
import pytest

from ray_logmilp.config import ConfigError
from ray_logmilp.tuning import ObjectiveConfig, objective_value, tuning_data


def test_objective_uses_validation_metrics_only():
    obj = ObjectiveConfig(metric="val_f1", sr_weight=0.1)
    assert objective_value({"val_f1": 0.8, "val_sr": 0.5}, obj) == pytest.approx(0.85)
    assert objective_value({"val_f1": 0.8, "val_sr": float("nan")}, obj) == pytest.approx(0.8)
    assert objective_value({"val_f1": 0.8, "val_sr": 0.5}, ObjectiveConfig(sr_weight=0)) == pytest.approx(0.8)
    assert objective_value({"val_auc": 0.7}, ObjectiveConfig(metric="val_auc", sr_weight=0)) == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="metric"):
        ObjectiveConfig(metric="loc@1")


def test_tuning_data_has_no_instance_labels_and_no_test_split():
    from ray_logmilp.ingest.prepared import BagSet, PreparedData

    def bags(n):
        return BagSet(bag_ids=np.arange(n), labels=np.array([0, 1] * (n // 2), np.int8),
                      offsets=np.arange(0, 3 * n + 1, 3), template_ids=np.zeros(3 * n, np.int32),
                      instance_labels=np.ones(3 * n, np.int8))

    data = PreparedData(root="x", embeddings=np.zeros((1, 8), np.float32),
                        splits={"train": bags(4), "val": bags(2), "test": bags(2)}, manifest={"a": 1})
    out = tuning_data(data)
    assert set(out.splits) == {"train", "val"}
    for split in out.splits.values():
        assert (split.instance_labels == -1).all() and len(split.instance_labels) == len(split.template_ids)
    assert (data.splits["train"].instance_labels == 1).all()          # the original is untouched
