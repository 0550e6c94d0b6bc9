"""Loading prepared bags for training and evaluation, and turning them into padded tensors.

A prepared folder is only read when its files match what ``manifest.json`` records of them
(:func:`output_record`: sizes, parquet row counts, hashes of the small JSON files), so a folder that mixes
the outputs of two runs, or one edited by hand, is refused. Bags are held as flat arrays plus offsets
(the parquet list layout), so a corpus of millions of lines costs a few bytes per line; the embedding
lookup happens per batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_logmilp import storage


class DataError(ValueError):
    """The prepared folder is missing, incomplete or inconsistent."""


MANIFEST = "manifest.json"
_RERUN = "re-run jobs/prepare.py into it (or point train.prepared_dir at a complete prepare output)"


def output_record(fs, path: str) -> dict[str, Any]:
    """What the manifest records of one output file, cheap to check again: its size in bytes, plus the
    row count from a parquet file's footer, or the sha256 of any other (small) file."""
    record: dict[str, Any] = {"bytes": int(fs.get_file_info(path).size)}
    if path.endswith(".parquet"):
        with fs.open_input_file(path) as fh:
            record["rows"] = pq.ParquetFile(fh).metadata.num_rows
    else:
        with fs.open_input_stream(path) as fh:
            record["sha256"] = hashlib.sha256(fh.read()).hexdigest()
    return record


def _check_outputs(fs, root: str, manifest: Any, prepared_dir: str) -> None:
    """Raise :class:`DataError` unless every file the manifest records is there and matches its record."""
    recorded = manifest.get("outputs") if isinstance(manifest, dict) else None
    if not isinstance(recorded, dict) or not recorded:
        raise DataError(f"{prepared_dir}: {MANIFEST} records no output files (written by an older prepare, or "
                        f"edited), so its files cannot be checked: {_RERUN}")
    problems = []
    for name, want in recorded.items():
        path = f"{root}/{name}"
        if not storage.exists(fs, path):
            problems.append(f"{name} is missing")
            continue
        try:
            got = output_record(fs, path)
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"{name} cannot be read ({exc})")
            continue
        if got != want:
            problems.append(f"{name} is {got}, the manifest says {want}")
    if problems:
        raise DataError(f"{prepared_dir}: the files do not match {MANIFEST} ({'; '.join(problems)}): the folder "
                        f"mixes the outputs of different runs or was edited — {_RERUN}")


@dataclass
class BagSet:
    """Bags of one split: ragged template-id lists as flat values + offsets."""

    bag_ids: np.ndarray          # [n] int64
    labels: np.ndarray           # [n] int8 (bag labels; -1 unlabelled)
    offsets: np.ndarray          # [n+1] int64 into template_ids
    template_ids: np.ndarray     # [total] int32
    instance_labels: np.ndarray  # [total] int8, -1 unknown (evaluation only, never used in training)

    def __len__(self) -> int:
        return len(self.bag_ids)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def instances(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def subset(self, index: np.ndarray) -> "BagSet":
        index = np.asarray(index, dtype=np.int64)
        lens = self.lengths()[index]
        starts = self.offsets[index]
        take = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lens)]) if len(index) else np.empty(0, np.int64)
        return BagSet(self.bag_ids[index], self.labels[index], np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                      self.template_ids[take], self.instance_labels[take])


@dataclass
class PreparedData:
    """What training needs from a prepare run: the template embedding table and bags per split."""

    root: str
    embeddings: np.ndarray        # [T, d] float32
    splits: dict[str, BagSet]
    manifest: dict[str, Any]

    @property
    def input_dim(self) -> int:
        return int(self.embeddings.shape[1])


def _read_bagset(table) -> BagSet:
    ids = table.column("template_ids").combine_chunks()
    inst = table.column("instance_labels").combine_chunks()
    return BagSet(
        bag_ids=table.column("bag_id").to_numpy(),
        labels=table.column("label").to_numpy().astype(np.int8),
        offsets=ids.offsets.to_numpy().astype(np.int64) - int(ids.offsets[0].as_py()),
        template_ids=ids.flatten().to_numpy().astype(np.int32),
        instance_labels=inst.flatten().to_numpy().astype(np.int8),
    )


def load_prepared(prepared_dir: str, splits: tuple[str, ...] = ("train", "val", "test")) -> PreparedData:
    """Read ``templates.parquet`` + ``bags.parquet`` of a prepare run (local folder or URI), after
    checking every output file against ``manifest.json``."""
    fs, root = storage.resolve_dir(prepared_dir)
    for name in ("templates.parquet", "bags.parquet", MANIFEST):
        if not storage.exists(fs, f"{root}/{name}"):
            raise DataError(f"{prepared_dir}: {name} is missing — run jobs/prepare.py first "
                            f"(or point train.prepared_dir at a prepare output)")
    try:
        manifest = json.loads(storage.read_text(fs, f"{root}/{MANIFEST}"))
    except ValueError as exc:
        raise DataError(f"{prepared_dir}: {MANIFEST} is not valid JSON ({exc}): {_RERUN}") from None
    _check_outputs(fs, root, manifest, prepared_dir)
    templates = pq.read_table(f"{root}/templates.parquet", filesystem=fs)
    emb = templates.column("embedding").combine_chunks()
    dim = emb.type.list_size
    embeddings = emb.flatten().to_numpy().astype(np.float32).reshape(-1, dim)
    bags = pq.read_table(f"{root}/bags.parquet", filesystem=fs,
                         columns=["bag_id", "split", "label", "template_ids", "instance_labels"])
    out = {}
    for split in splits:
        part = bags.filter(pc.equal(bags.column("split"), split))
        out[split] = _read_bagset(part)
    if len(out.get("train", [])) == 0:
        raise DataError(f"{prepared_dir}: the train split has no bags")
    if int(out["train"].template_ids.max(initial=-1)) >= len(embeddings):
        raise DataError(f"{prepared_dir}: bags reference template ids beyond templates.parquet")
    return PreparedData(root=prepared_dir, embeddings=embeddings, splits=out, manifest=manifest)


def collate(bags: BagSet, index: np.ndarray, embeddings, max_len: int | None = None):
    """Padded batch for the bags at ``index``.

    Returns (x [B,W,d] float32, mask [B,W] bool, y [B] long, instance_labels [B,W] int8) as torch
    tensors, W = longest bag in the batch. ``embeddings`` is a torch tensor [T, d] (on any device).
    """
    import torch

    index = np.asarray(index, dtype=np.int64)
    lens = bags.lengths()[index]
    width = int(lens.max()) if len(lens) else 1
    if max_len is not None and width > max_len:
        raise DataError(f"a bag has {width} lines, above the model's max_len {max_len}: lower "
                        f"data.window.max_instances")
    B = len(index)
    ids = np.zeros((B, width), dtype=np.int64)
    inst = np.full((B, width), -1, dtype=np.int8)
    mask = np.zeros((B, width), dtype=bool)
    for row, i in enumerate(index):
        sl = bags.instances(int(i))
        n = sl.stop - sl.start
        ids[row, :n] = bags.template_ids[sl]
        inst[row, :n] = bags.instance_labels[sl]
        mask[row, :n] = True
    ids_t = torch.from_numpy(ids).to(embeddings.device)
    x = embeddings[ids_t]                                   # [B, W, d]
    mask_t = torch.from_numpy(mask).to(embeddings.device)
    x = x * mask_t.unsqueeze(-1)                            # padding rows are exactly zero
    y = torch.from_numpy(bags.labels[index].astype(np.int64)).to(embeddings.device)
    return x, mask_t, y, torch.from_numpy(inst)
