"""load_prepared refuses a prepared folder whose files do not match its manifest."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from ray_logmilp.ingest.prepared import DataError, load_prepared, output_record


def _bags(n: int) -> pa.Table:
    return pa.table({
        "bag_id": pa.array(np.arange(n, dtype=np.int64)),
        "split": pa.array(["train"] * n),
        "label": pa.array(np.arange(n) % 2, pa.int8()),
        "template_ids": pa.array([[0, 1]] * n, pa.list_(pa.int32())),
        "instance_labels": pa.array([[0, -1]] * n, pa.list_(pa.int8())),
    })


@pytest.fixture()
def prepared(tmp_path):
    """A small prepared folder whose manifest records its files, as prepare writes it."""
    root = tmp_path / "prepared"
    root.mkdir()
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(6, np.float32)), 3)
    pq.write_table(pa.table({"template_id": pa.array([0, 1], pa.int32()), "embedding": emb}), root / "templates.parquet")
    pq.write_table(_bags(10), root / "bags.parquet")
    (root / "parser.json").write_text('{"templates": ["a <*>", "b"]}')
    fs = pafs.LocalFileSystem()
    outputs = {name: output_record(fs, str(root / name)) for name in ("templates.parquet", "bags.parquet", "parser.json")}
    (root / "manifest.json").write_text(json.dumps({"version": 2, "outputs": outputs}))
    return root


def test_a_complete_folder_loads(prepared):
    data = load_prepared(str(prepared), splits=("train",))
    assert len(data.splits["train"]) == 10 and data.input_dim == 3
    assert load_prepared(f"file://{prepared}", splits=("train",)).manifest["outputs"]["bags.parquet"]["rows"] == 10


@pytest.mark.parametrize("tamper, message", [
    (lambda root: pq.write_table(_bags(4), root / "bags.parquet"), r"bags\.parquet is .*'rows': 4.*re-run"),
    (lambda root: (root / "parser.json").write_text('{"templates": ["a <*>", "c"]}'), r"parser\.json is .*sha256"),
    (lambda root: (root / "parser.json").unlink(), r"parser\.json is missing"),
    (lambda root: (root / "bags.parquet").write_bytes((root / "bags.parquet").read_bytes()[:-20]),
     r"bags\.parquet (cannot be read|is )"),
    (lambda root: (root / "manifest.json").write_text('{"version": 1}'), r"records no output files.*re-run"),
    (lambda root: (root / "manifest.json").write_text('{"version": 2, "outp'), r"not valid JSON"),
])
def test_a_mixed_or_edited_folder_is_refused_with_what_to_do(prepared, tamper, message):
    tamper(prepared)
    with pytest.raises(DataError, match=message):
        load_prepared(str(prepared), splits=("train",))
