"""The evaluation report: markdown tables laid out like the paper's Tables I–III, example lines, the
precision–recall curve and attention heatmaps, and metrics.json."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ray_logmilp import storage
from ray_logmilp.bundle import Bundle
from ray_logmilp.evaluation.metrics import pr_curve
from ray_logmilp.ingest.prepared import BagSet, PreparedData, collate

#: Positive test bags drawn in heatmaps.png: enough to compare heads across bags, few enough to read.
HEATMAPS = 4


def _fmt(cell: dict[str, float]) -> str:
    if cell is None or np.isnan(cell["mean"]):
        return "n/a"
    return f"{cell['mean']:.4f} ± {cell['std']:.4f}"


def markdown_report(name: str, summary: dict[str, dict[str, float]], *, seeds: list[int], manifest: dict[str, Any],
                    ablation: dict[str, dict[str, dict[str, float]]] | None = None, top_k: list[int],
                    examples: list[str] | None = None, note: str | None = None,
                    models: list[dict[str, Any]] | None = None) -> str:
    """The report as markdown. ``models`` (one per evaluated bundle: ``bundle``, ``epoch`` kept, 0-based,
    ``train_seconds`` or None when the bundle was given, not trained here) adds a table of the models."""
    lines = [f"# LogMILP evaluation: {name}", ""]
    lines.append(f"Seeds {seeds}; test bags {int(summary['bags']['mean'])} "
                 f"({int(summary['positive_bags']['mean'])} positive); corpus lines {manifest['lines']['read']:,}, "
                 f"templates {manifest['templates']:,}.")
    if note:
        lines += ["", f"> {note}"]
    lines += ["", "## Table I — bag-level detection (threshold chosen on validation)", "",
              "| Model | AUC | Prec. | Rec. | F1 |", "|---|---|---|---|---|",
              f"| LogMILP | {_fmt(summary['auc'])} | {_fmt(summary['precision'])} | {_fmt(summary['recall'])} | "
              f"{_fmt(summary['f1'])} |", ""]
    loc_cols = [f"loc@{k}" for k in top_k]
    lines += ["## Table II — instance-level localization (positive test bags)", "",
              "| Model | " + " | ".join(c.replace("loc", "Loc") for c in loc_cols) + " | SR | SR, other line (control) |",
              "|---" * (len(loc_cols) + 3) + "|",
              "| LogMILP | " + " | ".join(_fmt(summary[c]) for c in loc_cols)
              + f" | {_fmt(summary['sr'])} | {_fmt(summary.get('sr_other_line'))} |", "",
              "SR: positive bags whose score drops by more than δ_sr when the top line is removed. The control "
              "removes a random other line instead; SR means something only when it is well above its control. "
              f"SR on bags with one labelled line: {_fmt(summary.get('sr_one_labelled'))}; with several: "
              f"{_fmt(summary.get('sr_several_labelled'))} (removing one of several anomalous lines leaves the "
              "window anomalous).", ""]
    if ablation:
        lines += ["## Table III — ablations (Δ = full − variant)", "",
                  "| Variant | Metric | Variant value | Δ (full − variant) |", "|---|---|---|---|"]
        full = ablation.get("full", summary)
        for variant, s in ablation.items():
            if variant == "full":
                continue
            for metric in ["precision", "recall", "f1", "loc@3", "sr", "sr_other_line"]:
                if metric in s:
                    delta = full[metric]["mean"] - s[metric]["mean"]
                    lines.append(f"| {variant} | {metric} | {_fmt(s[metric])} | {delta:+.4f} |")
        lines.append("")
    if models:
        lines += ["## Models", "", "| Bundle | Kept epoch | Training time |", "|---|---|---|"]
        for m in models:
            epoch = "n/a" if m.get("epoch") is None else str(m["epoch"] + 1)
            took = "n/a (not trained by this run)" if m.get("train_seconds") is None else f"{m['train_seconds']:.1f} s"
            lines.append(f"| `{m['bundle']}` | {epoch} | {took} |")
        lines.append("")
    if examples:
        lines += ["## Localized lines (examples from positive test bags)", ""] + examples + [""]
    lines += ["Figures: `pr_curve.png` (precision–recall with iso-F1 lines), `heatmaps.png` (attention of the "
              "minimum-entropy head; true anomalous lines marked)."]
    return "\n".join(lines) + "\n"


def line_texts(data: PreparedData, bag_ids: list[int]) -> dict[int, list[tuple[str, int, str]]]:
    """(file, line_no, raw content) of every line of the given bags, via the bags' line references."""
    fs, root = storage.resolve_dir(data.root)
    bags = pq.read_table(f"{root}/bags.parquet", filesystem=fs, columns=["bag_id", "line_files", "line_nos"])
    bags = bags.filter(pc.is_in(bags.column("bag_id"), value_set=pc.unique(np.asarray(bag_ids, np.int64))))
    wanted = {}
    for row in bags.to_pylist():
        wanted[row["bag_id"]] = list(zip(row["line_files"], row["line_nos"]))
    refs = {(f, n) for v in wanted.values() for f, n in v}
    events = pq.read_table(f"{root}/events.parquet", filesystem=fs, columns=["file", "line_no", "content"],
                           filters=[("line_no", "in", sorted({n for _, n in refs}))] if refs else None)
    content = {(f, n): c for f, n, c in zip(events.column("file").to_pylist(), events.column("line_no").to_pylist(),
                                            events.column("content").to_pylist()) if (f, n) in refs}
    return {b: [(f, n, content.get((f, n), "")) for f, n in v] for b, v in wanted.items()}


def example_lines(data: PreparedData, result: dict[str, Any], split: str = "test", limit: int = 3) -> list[str]:
    """Markdown snippets: the top lines of a few positive bags with their raw text."""
    bags: BagSet = data.splits[split]
    raw = result["_raw"]
    pos = np.flatnonzero(raw["y"] == 1)[:limit]
    texts = line_texts(data, [int(bags.bag_ids[i]) for i in pos])
    out = []
    for i in pos:
        bag_id = int(bags.bag_ids[i])
        lines = texts.get(bag_id, [])
        truth = bags.instance_labels[bags.instances(int(i))]
        out.append(f"- bag {bag_id}: P = {raw['p_orig'][i]:.3f}, without its top line {raw['p_pert'][i]:.3f}")
        for rank, (idx, w) in enumerate(zip(raw["tops"][i], raw["weights"][i]), start=1):
            f, n, text = lines[idx] if idx < len(lines) else ("?", -1, "")
            mark = " **(true anomaly)**" if truth[idx] == 1 else ""
            out.append(f"  {rank}. `{os.path.basename(f)}:{n}` weight {w:.3f}{mark}: `{text[:140]}`")
    return out


def plot_pr_curve(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for f1 in (0.2, 0.4, 0.6, 0.8, 0.9):
        r = np.linspace(f1 / (2 - f1) + 1e-6, 1, 200)
        p = f1 * r / (2 * r - f1)
        ax.plot(r, p, color="0.8", lw=0.8)
        ax.annotate(f"F1={f1}", (r[-1], p[-1]), fontsize=7, color="0.5")
    for i, res in enumerate(results):
        precision, recall, _ = pr_curve(res["_raw"]["y"], res["_raw"]["p_orig"])
        ax.plot(recall, precision, lw=1.5, label=f"seed run {i}")
        ax.scatter([res["recall"]], [res["precision"]], marker="o", s=25)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision–recall (dots: validation-chosen threshold)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heatmaps(bundle: Bundle, data: PreparedData, path: str, count: int = HEATMAPS, split: str = "test") -> None:
    """Attention of the minimum-entropy head over a few positive bags; true anomalous lines marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ray_logmilp.model.localize import attention_entropy
    from ray_logmilp.model.logmilp import MAX_LEN

    bags = data.splits[split]
    pos = np.flatnonzero(bags.labels == 1)[:count]
    if len(pos) == 0:
        return
    model = bundle.model
    device = next(model.parameters()).device
    x, mask, _, inst = collate(bags, pos, torch.from_numpy(data.embeddings).to(device), MAX_LEN)
    with torch.no_grad():
        out = model(x, mask)
        head = attention_entropy(out.attention, mask).argmin(dim=1)
    fig, axes = plt.subplots(len(pos), 1, figsize=(10, 1.2 * len(pos) + 0.5), squeeze=False)
    for r, ax in enumerate(axes[:, 0]):
        n = int(mask[r].sum())
        weights = out.attention[r, head[r], :n].float().cpu().numpy()[None, :]
        ax.imshow(weights, aspect="auto", cmap="viridis")
        for j in np.flatnonzero(inst[r, :n].numpy() == 1):
            ax.axvline(j, color="red", lw=1.2)
        ax.set_yticks([])
        ax.set_title(f"bag {int(bags.bag_ids[pos[r]])}: P={float(out.prob[r]):.3f}, head {int(head[r])} "
                     f"(red: true anomalous lines)", fontsize=8)
    axes[-1, 0].set_xlabel("line in bag")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: str, obj: Any) -> None:
    """``obj`` as indented JSON (numpy scalars as floats)."""
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=float)
