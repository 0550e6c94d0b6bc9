"""The evaluate job's body (``jobs/evaluate.py``): train or load the seeds' bundles, evaluate them on the
test split, optionally train the ablation rows of ``configs/ablations.yaml``, and write the report."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass

from ray_logmilp.cli.prepare import prepare_and_print
from ray_logmilp.cli.smoke import with_smoke_corpus

log = logging.getLogger(__name__)


@dataclass
class Model:
    """A bundle to evaluate and, when this run trained it, how long training took."""

    bundle_dir: str
    train_seconds: float | None = None


def _train_seeds(config_path, overrides: list[str], seeds: list[int], tag: str) -> list[Model]:
    from ray_logmilp.config import load_project
    from ray_logmilp.train import train_with_ray

    models = []
    for seed in seeds:
        base = load_project(config_path, overrides)
        slug = tag.replace("/", "").replace(" ", "_") or "full"
        run_overrides = overrides + [f"train.seed={seed}", f"train.bundle_dir={base.train.bundle_dir}/{slug}/seed_{seed}"]
        if base.train.run_name:
            run_overrides.append(f"train.run_name={base.train.run_name}-{slug}-seed{seed}")
        cfg = load_project(config_path, run_overrides)
        log.info("training %s seed %d", tag or "full model", seed)
        result = train_with_ray(cfg)
        models.append(Model(result.bundle_dir, result.seconds))
    return models


def evaluate_main(args: argparse.Namespace) -> int:
    from ray_logmilp.config import load_project, to_dict
    from ray_logmilp.evaluation.ablations import ablation_rows, load_ablations, select_rows

    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = with_smoke_corpus(["eval.seeds=[0]"] + overrides)
    cfg = load_project(args.config, overrides)
    # Which ablation rows to train is settled before any training, so a typo in --ablation costs nothing.
    rows = select_rows(load_ablations(), None if args.ablation == "all" else args.ablation) if args.ablation else []

    from ray_logmilp.bundle import load_bundle, update_metrics, verify_bundle
    # Likewise a bad --bundle (edited, unsigned where a key is set, malformed): one line before any work.
    for path in args.bundle:
        verify_bundle(path)
    from ray_logmilp.evaluation.evaluate import aggregate, evaluate, strip_raw
    from ray_logmilp.evaluation.report import (example_lines, markdown_report, plot_heatmaps, plot_pr_curve,
                                               write_json)
    from ray_logmilp.ingest.prepared import load_prepared

    if args.smoke_test:
        prepare_and_print(cfg)
    models = [Model(b) for b in args.bundle] or _train_seeds(args.config, overrides, cfg.eval.seeds, "")
    data = load_prepared(cfg.train.prepared_dir or cfg.data.output_dir)

    def run(models: list[Model], tag: str) -> tuple[list[dict], list, list[dict]]:
        results, loaded, info = [], [], []
        for m in models:
            bundle = load_bundle(m.bundle_dir)
            res = evaluate(bundle, data, top_k=cfg.eval.top_k, delta_sr=cfg.eval.delta_sr,
                           perturbation=cfg.loss.perturbation)
            update_metrics(m.bundle_dir, {"test": strip_raw(res)})
            results.append(res)
            loaded.append(bundle)
            info.append({"bundle": m.bundle_dir, "epoch": bundle.manifest.get("epoch"),
                         "train_seconds": m.train_seconds})
            took = "given, not trained here" if m.train_seconds is None else f"trained in {m.train_seconds:.1f}s"
            epoch = info[-1]["epoch"]
            print(f"{tag or 'full model'}: {m.bundle_dir}: kept epoch {'n/a' if epoch is None else epoch + 1}, "
                  f"{took}; test F1 {res['f1']:.4f}, SR {res['sr']:.4f}", flush=True)
        return results, loaded, info

    results, loaded, models_info = run(models, "")
    summary = aggregate(results)
    ablation = None
    if rows:
        ablation = {"full": summary}
        changed, same = ablation_rows(args.config, overrides, rows)
        for name in same:
            print(f"ablation row {name!r} skipped: this config already has it (it would repeat the full model)")
        for row in changed:
            row_results, _, row_info = run(_train_seeds(args.config, overrides + row.overrides, cfg.eval.seeds,
                                                        row.name), row.name)
            ablation[row.name] = aggregate(row_results)
            models_info += [{**m, "ablation": row.name} for m in row_info]

    report_dir = args.report_dir or os.path.join(cfg.train.bundle_dir, "report")
    os.makedirs(report_dir, exist_ok=True)
    plot_pr_curve(results, os.path.join(report_dir, "pr_curve.png"))
    plot_heatmaps(loaded[0], data, os.path.join(report_dir, "heatmaps.png"))
    report = markdown_report(cfg.data.format if not args.smoke_test else "smoke test", summary,
                             seeds=cfg.eval.seeds if not args.bundle else list(range(len(models))),
                             manifest=data.manifest, ablation=ablation, top_k=cfg.eval.top_k,
                             examples=example_lines(data, results[0]), note=getattr(args, "note", None),
                             models=models_info)
    with open(os.path.join(report_dir, "report.md"), "w") as fh:
        fh.write(report)
    write_json(os.path.join(report_dir, "metrics.json"), {
        "summary": summary, "per_run": [strip_raw(r) for r in results], "bundles": [m.bundle_dir for m in models],
        "models": models_info, "ablation": ablation, "config": to_dict(cfg)})
    print(report)
    print(f"report: {report_dir}/report.md (metrics.json, pr_curve.png, heatmaps.png beside it)")
    return 0
