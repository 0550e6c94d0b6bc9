"""``generate``: stream a synthetic corpus to its files block by block, then write ``truth.json``."""
from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ray_logmilp.synthetic.blocks import BlockGenerator, CorpusState
from ray_logmilp.synthetic.config import CORRUPT_KINDS, SyntheticConfig
from ray_logmilp.synthetic.lines import DayNames, corrupt_line, format_lines

logger = logging.getLogger(__name__)


def generate(config: SyntheticConfig, out_dir: str | os.PathLike,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Write a synthetic corpus into ``out_dir`` (created if needed) and return a summary dict.

    ``progress(lines_done, lines_total)`` is called after every block when given.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(config)  # re-runs the checks: fields may have been changed since construction
    gen = BlockGenerator(cfg)
    st = CorpusState()
    st.t_us = cfg.start_time * 1_000_000
    days = DayNames()
    W = cfg.report_window_lines
    block = int(math.ceil(cfg.block_lines / W) * W)

    # corrupt lines: inserted before valid line index `at` (0-based); several may share an index
    crng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xBAD]))
    corrupt_plan: list[tuple[int, str]] = []
    if cfg.corrupt and cfg.corrupt_per_kind > 0:
        for kind in CORRUPT_KINDS:
            for at in crng.integers(0, cfg.n_lines, size=cfg.corrupt_per_kind).tolist():
                corrupt_plan.append((int(at), kind))
        corrupt_plan.sort()
    corrupt_done: list[dict] = []
    cp = 0

    corpus_name = "corpus.log.gz" if cfg.gzip else "corpus.log"
    raw = open(out / corpus_name, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) if cfg.gzip else None
    sink = gz if gz is not None else raw
    alarms_f = open(out / "alarms.csv", "w", newline="")
    alarms_f.write("start,end\n")
    ep_f = open(out / "episodes.csv", "w", newline="")
    ep_w = csv.writer(ep_f, lineterminator="\n")
    ep_w.writerow(["episode_id", "kind", "variant", "start_line", "end_line", "start_time", "end_time",
                   "labelled_lines", "context_lines", "labelled_templates"])
    tid_f = open(out / "template_ids.i32", "wb") if cfg.write_template_ids else None
    n_labelled = 0
    n_benign = {"context_anomaly": 0, "trigger": 0, "cooccur_x": 0, "cooccur_y": 0, "close": 0}
    role_codes = {r: i for i, r in enumerate(("normal", "rare", "trigger", "context_anomaly", "cooccur_x",
                                               "cooccur_y", "open", "close"))}
    role_arr = np.array([role_codes[t.role] for t in gen.templates], dtype=np.int8)
    tag_arr = gen.tags
    t_per_line = 1e6 / cfg.lines_per_second
    t_per_burst_line = t_per_line / cfg.burst_speedup
    Tw = cfg.report_window_seconds
    try:
        b_idx = 0
        while st.logical < cfg.n_lines:
            n = min(block, cfg.n_lines - st.logical)
            rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, b_idx]))
            if n >= 4 * gen.margin + gen.min_episode_gap:
                ids, labelled, burst_cont, node, episodes, bpos, blen = gen.block(rng, n, st)
            else:  # a tiny last block: background only
                ids = gen.background(rng, n)
                labelled = np.zeros(n, dtype=bool)
                burst_cont = np.zeros(n, dtype=bool)
                node = rng.integers(0, cfg.n_nodes, size=n)
                episodes, bpos, blen = [], np.empty(0, np.int64), np.empty(0, np.int64)
            # arrival times (µs), non-decreasing
            gaps = rng.exponential(1.0, size=n) * np.where(burst_cont, t_per_burst_line, t_per_line)
            t_us = st.t_us + np.cumsum(np.rint(gaps).astype(np.int64))
            st.t_us = int(t_us[-1])
            sec = t_us // 1_000_000
            us = t_us - sec * 1_000_000
            contents = gen.contents(rng, ids)
            lab = np.where(labelled, tag_arr[ids], "-").tolist()
            lines = format_lines(lab, sec, us, gen.pools.nodes[node].tolist(), gen.heads[ids].tolist(),
                                  contents, days)
            # physical line numbers (1-based) of this block's valid lines, corrupt lines interleaved
            base_logical = st.logical
            ins: list[tuple[int, str]] = []
            while cp < len(corrupt_plan) and corrupt_plan[cp][0] < base_logical + n:
                ins.append(corrupt_plan[cp])
                cp += 1
            ins_at = np.array([a - base_logical for a, _ in ins], dtype=np.int64)
            phys = st.physical + 1 + np.arange(n) + np.searchsorted(ins_at, np.arange(n), side="right")
            if ins:
                out_lines: list[str] = []
                prev = 0
                for j, (a, kind) in enumerate(ins):
                    r = a - base_logical
                    out_lines.extend(lines[prev:r])
                    prev = r
                    out_lines.append(corrupt_line(kind, int(sec[r]), crng, days))
                    corrupt_done.append({"line_no": st.physical + r + j + 1, "kind": kind})
                out_lines.extend(lines[prev:])
                lines = out_lines
            payload = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
            sink.write(payload)
            if tid_f is not None:
                tid_f.write(ids.astype("<i4").tobytes())

            # episodes → alarms.csv, episodes.csv
            prng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2, b_idx]))
            for ep in episodes:
                kind = ep["kind"]
                st.episodes_by_kind[kind] += 1
                st.labelled_by_kind[kind] += len(ep["labelled"])
                if kind == "order":
                    st.order_variants[ep["variant"]] += 1
                p_all = sorted(ep["labelled"] + ep["context"])
                t0 = int(t_us[p_all[0]]) / 1e6
                t1 = int(t_us[p_all[-1]]) / 1e6
                pad0, pad1 = (cfg.alarm_pad_seconds * prng.uniform(0.5, 1.5, size=2)).tolist()
                a0 = int(math.floor(t0 - pad0))
                a1 = int(math.ceil(t1 + pad1))
                alarms_f.write(f"{a0},{a1}\n")
                ep_w.writerow([st.episode_id, kind, ep["variant"], int(phys[ep["start"]]),
                               int(phys[ep["end"]]), int(sec[p_all[0]]), int(sec[p_all[-1]]),
                               " ".join(str(int(phys[q])) for q in ep["labelled"]),
                               " ".join(str(int(phys[q])) for q in ep["context"]),
                               " ".join(str(int(ids[q])) for q in ep["labelled"])])
                st.episode_id += 1

            # statistics
            n_lab_b = int(labelled.sum())
            n_labelled += n_lab_b
            roles_b = role_arr[ids]
            for r in n_benign:
                n_benign[r] += int(((roles_b == role_codes[r]) & ~labelled).sum())
            if n_lab_b:
                for tag, c in zip(*np.unique(tag_arr[ids[labelled]].astype(str), return_counts=True)):
                    st.tag_counts[str(tag)] = st.tag_counts.get(str(tag), 0) + int(c)
            # fixed windows (block is a multiple of W, so windows never straddle blocks)
            nw = int(math.ceil(n / W))
            pos_w = np.zeros(nw, dtype=bool)
            pos_w[np.flatnonzero(labelled) // W] = True
            st.fixed_windows += nw
            st.fixed_positive += int(pos_w.sum())
            for s, L in zip(bpos.tolist(), blen.tolist()):
                st.bursts["total"] += 1
                key = "in_positive_window" if pos_w[s // W] or pos_w[(s + L - 1) // W] else "in_negative_window"
                st.bursts[key] += 1
            # time windows: non-empty windows and positive ones, counted on non-decreasing window ids
            tw = (sec - cfg.start_time) // Tw
            uw = np.unique(tw)
            st.time_windows += uw.size - (1 if st.time_last_window is not None and uw[0] == st.time_last_window else 0)
            st.time_last_window = int(uw[-1])
            if n_lab_b:
                pw = np.unique(tw[labelled])
                st.time_positive += pw.size - (1 if st.time_pos_last is not None and pw[0] == st.time_pos_last else 0)
                st.time_pos_last = int(pw[-1])

            keep = min(cfg.clean_lines + 4, n)
            st.tail_ids = ids[-keep:].copy()
            st.tail_lab = labelled[-keep:].copy()
            st.logical += n
            st.physical += n + len(ins)
            b_idx += 1
            if progress is not None:
                progress(st.logical, cfg.n_lines)
        # corrupt lines planned at the very end (none: positions are < n_lines) — nothing left over
    finally:
        if gz is not None:
            gz.close()
        raw.close()
        alarms_f.close()
        ep_f.close()
        if tid_f is not None:
            tid_f.close()

    n_total = st.physical
    elapsed = time.perf_counter() - t_start
    counts = {
        "lines_total": n_total,
        "lines_valid": st.logical,
        "lines_normal": st.logical - n_labelled,
        "lines_anomalous": n_labelled,
        "lines_corrupt": len(corrupt_done),
        "episodes": st.episode_id,
        "alarms": st.episode_id,
        "templates": len(gen.templates),
        "normal_templates": int(gen.normal_ids.size),
    }
    hard_cases = {
        "benign_context_anomaly_lines": n_benign["context_anomaly"],
        "benign_trigger_lines": n_benign["trigger"],
        "benign_cooccur_x_lines": n_benign["cooccur_x"],
        "benign_cooccur_y_lines": n_benign["cooccur_y"],
        "benign_close_lines": n_benign["close"],
        "bursts": dict(st.bursts),
        "cleanup_replaced_lines": st.counts.get("cleanup_replaced", 0),
    }
    windows = {
        "fixed_window_lines": W,
        "fixed_windows": st.fixed_windows,
        "fixed_windows_positive": st.fixed_positive,
        "fixed_positive_fraction": st.fixed_positive / max(st.fixed_windows, 1),
        "time_window_seconds": Tw,
        "time_windows_nonempty": st.time_windows,
        "time_windows_positive": st.time_positive,
        "time_positive_fraction": st.time_positive / max(st.time_windows, 1),
    }
    files = {"corpus": corpus_name, "alarms": "alarms.csv", "episodes": "episodes.csv", "truth": "truth.json"}
    if cfg.write_template_ids:
        files["template_ids"] = "template_ids.i32"
    truth = {
        "format": "bgl",
        "generator": "ray_logmilp.synthetic",
        "config": cfg.to_dict(),
        "files": files,
        "counts": counts,
        "episodes_by_kind": dict(st.episodes_by_kind),
        "labelled_lines_by_kind": dict(st.labelled_by_kind),
        "order_variants": dict(st.order_variants),
        "labelled_lines_by_tag": dict(sorted(st.tag_counts.items())),
        "hard_cases": hard_cases,
        "windows": windows,
        "corrupt_lines": corrupt_done,
        "time_range": [cfg.start_time, int(st.t_us // 1_000_000)],
        "templates": [t.to_dict() for t in gen.templates],
    }
    with open(out / "truth.json", "w") as f:
        json.dump(truth, f, indent=1)
    summary = {
        "out_dir": str(out),
        "files": files,
        **counts,
        "episodes_by_kind": dict(st.episodes_by_kind),
        "fixed_positive_fraction": round(windows["fixed_positive_fraction"], 4),
        "time_positive_fraction": round(windows["time_positive_fraction"], 4),
        "seconds": round(elapsed, 3),
        "bytes": (out / corpus_name).stat().st_size,
    }
    logger.info("synthetic corpus: %d lines (%d anomalous) in %.1fs -> %s", n_total, n_labelled, elapsed, out)
    return summary

