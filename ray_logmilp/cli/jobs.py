"""The bodies of the entry scripts (jobs/*.py stay thin: parse arguments, call one of these)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ray_logmilp.cli.smoke import smoke_overrides, write_smoke_corpus

log = logging.getLogger(__name__)


def format_prepare_summary(manifest: dict[str, Any]) -> str:
    lines = manifest["lines"]
    out = [
        f"prepared {manifest['format']} corpus in {manifest['seconds']:.1f}s",
        f"  lines read        {lines['read']:>12,}",
        f"  parsed            {lines['parsed']:>12,}",
        f"  quarantined       {lines['quarantined']:>12,}"
        + (f"  ({', '.join(f'{k}: {v}' for k, v in lines['quarantined_by_reason'].items())})"
           if lines["quarantined"] else ""),
        f"  templates         {manifest['templates']:>12,}",
        f"  bags              {manifest['bags']['total']:>12,}",
    ]
    for split, c in sorted(manifest["bags"]["by_split"].items()):
        out.append(f"    {split:<6} positive {c['positive']:>8,}  negative {c['negative']:>8,}"
                   + (f"  unlabelled {c['unlabelled']:,}" if c["unlabelled"] else ""))
    if lines.get("without_session"):
        out.append(f"  lines without a session key (not bagged): {lines['without_session']:,}")
    return "\n".join(out)


def prepare_main(args: argparse.Namespace) -> int:
    from ray_logmilp.config import load_project
    from ray_logmilp.ingest.pipeline import prepare
    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = _smoke_corpus(overrides)
    cfg = load_project(args.config, overrides)      # every config error surfaces here, before Ray starts
    manifest = prepare(cfg.data)
    print(format_prepare_summary(manifest))
    print(f"outputs: {cfg.data.output_dir}")
    return 0


def _smoke_corpus(overrides: list[str]) -> list[str]:
    """Write the smoke corpus; the overrides that point every stage at it come first, the user's after."""
    root, smoke = smoke_overrides()
    write_smoke_corpus(root)
    return smoke + overrides


def train_main(args: argparse.Namespace) -> int:
    from ray_logmilp.config import load_project
    from ray_logmilp.train.loop import train_with_ray

    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = _smoke_corpus(overrides)
    cfg = load_project(args.config, overrides)      # every config error surfaces here, before Ray starts
    if args.prepare or args.smoke_test:
        from ray_logmilp.ingest.pipeline import prepare
        print(format_prepare_summary(prepare(cfg.data)))
    result = train_with_ray(cfg)
    from ray_logmilp.train.loop import format_progress
    print("history:")
    for row in result.history:
        print("  " + format_progress(row, cfg.train.epochs))
    m = result.metrics
    print(f"trained in {result.seconds:.1f}s; best epoch {m['epoch'] + 1}: val F1 {m['val_f1']:.4f}, "
          f"AUC {m['val_auc']:.4f}, SR {m['val_sr']:.4f}, threshold {m['threshold']:.4f} "
          f"(kept for the highest val F1 + {cfg.train.select_sr_weight:g}·SR)")
    print(f"model bundle: {result.bundle_dir}")
    return 0


ABLATIONS: dict[str, list[str]] = {
    # L_loc is our second counterfactual term (remove candidate lines, credit the one that matters), so
    # the paper's "without consistency" question (section III-E, Table III) is only fully asked with both
    # terms off; the hinge alone is reported too, since L_loc does most of its work when it is missing.
    "w/o perturbation consistency (L_con and L_loc)": ["loss.use_consistency=false", "loss.lambda_l=0"],
    "w/o the consistency hinge only (L_con)": ["loss.use_consistency=false"],
    "w/o L_inst": ["loss.lambda_i=0"],
    # Not an ablation but the candidate default: a score that grows with the evidence (LossConfig.positive_cap).
    "with the graded score (positive cap, evidence counts)": ["loss.positive_cap=0.5", "loss.delta_c=0.2",
                                                               "loss.lambda_c=0.3", "model.evidence_counts=true"],
    "w/o weight averaging": ["train.ema_decay=0"],
    "w/o prototypes": ["model.use_prototypes=false"],
    "w/o candidate bias": ["model.use_candidate_bias=false"],
    "mask perturbation": ["loss.perturbation=mask"],
    "w/o history window": ["model.history_window=0"],
    "paper's attention (heads score Z)": ["model.attention_input=encoder"],
    "without L_loc, paper's pooling (Z)": ["model.pooled_values=encoder", "loss.lambda_l=0"],
    "with witness scores": ["model.witness_scores=true"],
}


def ablation_rows(config_path, overrides: list[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The ABLATIONS rows that change the model under this config, and the names of those that do not
    (e.g. "with the graded score" on a config that already has it): training those would only repeat
    the full model's seeds."""
    from ray_logmilp.config import load_project, to_dict

    full = to_dict(load_project(config_path, overrides))
    rows, same = [], []
    for name, extra in ABLATIONS.items():
        if to_dict(load_project(config_path, overrides + extra)) == full:
            same.append(name)
        else:
            rows.append((name, extra))
    return rows, same


def _train_seeds(args, overrides: list[str], seeds: list[int], tag: str) -> list[str]:
    from ray_logmilp.config import load_project
    from ray_logmilp.train.loop import train_with_ray

    bundles = []
    for seed in seeds:
        base = load_project(args.config, overrides)
        slug = tag.replace("/", "").replace(" ", "_") or "full"
        run_overrides = overrides + [f"train.seed={seed}", f"train.bundle_dir={base.train.bundle_dir}/{slug}/seed_{seed}"]
        if base.train.run_name:
            run_overrides.append(f"train.run_name={base.train.run_name}-{slug}-seed{seed}")
        cfg = load_project(args.config, run_overrides)
        log.info("training %s seed %d", tag or "full model", seed)
        bundles.append(train_with_ray(cfg).bundle_dir)
    return bundles


def evaluate_main(args: argparse.Namespace) -> int:
    import os

    from ray_logmilp.bundle import load_bundle, update_metrics
    from ray_logmilp.config import load_project, to_dict
    from ray_logmilp.ingest.prepared import load_prepared
    from ray_logmilp.evaluation.evaluate import (aggregate, evaluate, example_lines, markdown_report, plot_heatmaps, plot_pr_curve,
                             strip_raw, write_json)

    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = _smoke_corpus(["eval.seeds=[0]"] + overrides)
    cfg = load_project(args.config, overrides)
    prepared_dir = cfg.train.prepared_dir or cfg.data.output_dir
    if args.smoke_test:
        from ray_logmilp.ingest.pipeline import prepare
        print(format_prepare_summary(prepare(cfg.data)))
    bundles = args.bundle or _train_seeds(args, overrides, cfg.eval.seeds, "")
    data = load_prepared(prepared_dir)

    def run(bundle_dirs: list[str]) -> tuple[list[dict], list]:
        results, loaded = [], []
        for b in bundle_dirs:
            bundle = load_bundle(b)
            res = evaluate(bundle, data, top_k=cfg.eval.top_k, delta_sr=cfg.eval.delta_sr,
                           perturbation=cfg.loss.perturbation)
            update_metrics(b, {"test": strip_raw(res)})
            results.append(res)
            loaded.append(bundle)
        return results, loaded

    results, loaded = run(bundles)
    summary = aggregate(results)
    ablation = None
    if args.ablation:
        ablation = {"full": summary}
        rows, same = ablation_rows(args.config, overrides)
        for name in same:
            print(f"ablation row {name!r} skipped: this config already has it (it would repeat the full model)")
        for name, extra in rows:
            variant_bundles = _train_seeds(args, overrides + extra, cfg.eval.seeds, name)
            ablation[name] = aggregate(run(variant_bundles)[0])

    report_dir = args.report_dir or os.path.join(cfg.train.bundle_dir, "report")
    os.makedirs(report_dir, exist_ok=True)
    plot_pr_curve(results, os.path.join(report_dir, "pr_curve.png"))
    plot_heatmaps(loaded[0], data, os.path.join(report_dir, "heatmaps.png"), count=cfg.eval.heatmaps)
    report = markdown_report(cfg.data.format if not args.smoke_test else "smoke test", summary,
                             seeds=cfg.eval.seeds if not args.bundle else list(range(len(bundles))),
                             manifest=data.manifest, ablation=ablation, top_k=cfg.eval.top_k,
                             examples=example_lines(data, results[0]),
                             note=args.note if hasattr(args, "note") else None)
    with open(os.path.join(report_dir, "report.md"), "w") as fh:
        fh.write(report)
    write_json(os.path.join(report_dir, "metrics.json"), {
        "summary": summary, "per_run": [strip_raw(r) for r in results], "bundles": bundles,
        "ablation": ablation, "config": to_dict(cfg)})
    print(report)
    print(f"report: {report_dir}/report.md (metrics.json, pr_curve.png, heatmaps.png beside it)")
    return 0
