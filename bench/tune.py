"""The sweep bar: a 16-trial sweep on the synthetic benchmark corpus, then default vs best on the same seeds.

    python bench/tune.py [--lines 200000] [--epochs 10] [--num-samples 16] [--seeds 0 1 2] [key.path=value ...]

1. Generates (``python -m ray_logmilp.synthetic``) and prepares the corpus under ``--workdir`` unless it is
   there already (or ``--prepared DIR`` points at one).
2. Sweeps ``configs/search/default.yaml`` with ``--num-samples`` trials (Optuna TPE + ASHA), bag labels only.
3. Trains the default config and the sweep's best.yaml with every seed in ``--seeds`` (two Ray tasks at a
   time, plain ``fit``), and evaluates each bundle on the test split with ``ray_logmilp.evaluation.evaluate``.
4. Prints a table and, last, one JSON line: test F1/SR of both (mean over seeds), the share of trials ASHA
   stopped early, the compute it saved, and the per-trial overhead (trial wall time − time inside fit).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.tune")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs" / "synthetic.yaml"))
    p.add_argument("--search", default=str(REPO / "configs" / "search" / "default.yaml"))
    p.add_argument("--workdir", default="outputs/bench/tune")
    p.add_argument("--prepared", help="an existing prepare output to use instead of generating a corpus")
    p.add_argument("--lines", type=int, default=200_000, help="synthetic corpus size (the benchmark corpus)")
    p.add_argument("--epochs", type=int, default=10, help="train.epochs for trials and final runs (ASHA max_t)")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train seeds of the final comparison")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a new local Ray)")
    p.add_argument("--name", help="sweep name (default: bench-<time>); an existing one is resumed")
    p.add_argument("overrides", nargs="*", help="extra project-config overrides (both default and trials)")
    return p.parse_args(argv)


def ensure_prepared(args) -> str:
    if args.prepared:
        return args.prepared
    from ray_logmilp.config import load_project
    from ray_logmilp.ingest.pipeline import prepare

    work = Path(args.workdir).resolve()
    corpus, prepared = work / f"corpus_{args.lines}", work / f"prepared_{args.lines}"
    if not (corpus / "corpus.log").exists():
        subprocess.run([sys.executable, "-m", "ray_logmilp.synthetic", "--out", str(corpus), "--lines",
                        str(args.lines), "--seed", "0", "--quiet"], check=True)
    if not (prepared / "manifest.json").exists():
        cfg = load_project(args.config, [f"data.inputs=[{corpus / 'corpus.log'}]", f"data.output_dir={prepared}"])
        prepare(cfg.data, progress=False)
    return str(prepared)


def train_and_evaluate(cfg_dict: dict, prepared_dir: str) -> dict:
    """One final run: fit on train/val (plain PyTorch), then test metrics of its bundle."""
    import torch

    from ray_logmilp.bundle import load_bundle
    from ray_logmilp.config import ProjectConfig, from_dict
    from ray_logmilp.ingest.prepared import load_prepared
    from ray_logmilp.evaluation.evaluate import evaluate, strip_raw
    from ray_logmilp.train import train_local

    torch.set_num_threads(1)
    cfg = from_dict(ProjectConfig, cfg_dict)
    t0 = time.perf_counter()
    result = train_local(cfg)
    data = load_prepared(prepared_dir)
    res = strip_raw(evaluate(load_bundle(result.bundle_dir), data, top_k=cfg.eval.top_k,
                             delta_sr=cfg.eval.delta_sr, perturbation=cfg.loss.perturbation))
    res["val_f1"] = result.metrics["val_f1"]
    res["seconds"] = time.perf_counter() - t0
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import numpy as np
    import ray

    from ray_logmilp.config import load_project, to_dict
    from ray_logmilp.cli.sweep import format_summary
    from ray_logmilp.tuning import load_search_space, run_sweep

    ray.init(address=args.address, include_dashboard=False)
    work = Path(args.workdir).resolve()
    prepared = ensure_prepared(args)
    base = load_project(args.config, [f"data.output_dir={prepared}", "train.prepared_dir=null",
                                      f"train.epochs={args.epochs}", f"train.storage_path={work / 'ray_results'}",
                                      f"train.bundle_dir={work / 'bundles'}", *args.overrides])
    spec = load_search_space(args.search, [f"search.num_samples={args.num_samples}"])
    name = args.name or f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    resume = (work / "ray_results" / name / "tuner.pkl").exists()
    t0 = time.perf_counter()
    sweep = run_sweep(base, spec, name=name, resume=resume, verbose=1)
    sweep_seconds = time.perf_counter() - t0
    print(format_summary(sweep, top=args.num_samples))
    if not sweep.best_config_path:
        raise SystemExit("the sweep produced no best configuration")
    best = load_project(sweep.best_config_path)

    remote = ray.remote(num_cpus=1)(train_and_evaluate)
    jobs = {}
    for label, cfg in (("default", base), ("best", best)):
        for seed in args.seeds:
            d = to_dict(cfg)
            d["train"]["seed"] = seed
            d["train"]["bundle_dir"] = str(work / "bundles" / name / label / f"seed_{seed}")
            jobs[(label, seed)] = remote.remote(d, prepared)
    t1 = time.perf_counter()
    runs = dict(zip(jobs, ray.get(list(jobs.values()))))
    final_seconds = time.perf_counter() - t1

    def agg(label: str) -> dict:
        rs = [runs[(label, s)] for s in args.seeds]
        out = {}
        for k in ("f1", "sr", "auc", "precision", "recall", "loc@1", "val_f1"):
            vals = np.array([r[k] for r in rs], dtype=float)
            out[k] = float(np.nanmean(vals))
            out[f"{k}_std"] = float(np.nanstd(vals))
        out["per_seed"] = {s: {k: runs[(label, s)][k] for k in ("f1", "sr", "auc")} for s in args.seeds}
        return out

    default, tuned = agg("default"), agg("best")
    print("\n| config | test F1 | test SR | test AUC | Loc@1 | val F1 |\n|---|---|---|---|---|---|")
    for label, a in (("default", default), ("best (sweep)", tuned)):
        print(f"| {label} | {a['f1']:.4f} ± {a['f1_std']:.4f} | {a['sr']:.4f} ± {a['sr_std']:.4f} | "
              f"{a['auc']:.4f} | {a['loc@1']:.4f} | {a['val_f1']:.4f} |")
    s = sweep.summary
    out = {
        "bench": "tune", "corpus_lines": args.lines if not args.prepared else None, "prepared": prepared,
        "trials": s.get("finished"), "epochs": args.epochs, "seeds": args.seeds,
        "default": default, "best": tuned, "best_params": sweep.best["params"] if sweep.best else None,
        "best_ge_default": {"f1": tuned["f1"] >= default["f1"], "sr": tuned["sr"] >= default["sr"]},
        "stopped_early_fraction": s.get("stopped_early_fraction"),
        "compute_saved_fraction": s.get("compute_saved_fraction"),
        "compute_saved_seconds": s.get("compute_saved_seconds"),
        "epochs_run": s.get("epochs_run"), "epochs_budget": s.get("epochs_budget"),
        "overhead_seconds": s.get("overhead_seconds"),
        "slot_overhead_seconds_per_trial": s.get("slot_overhead_seconds_per_trial"),
        "concurrency": s.get("concurrency"), "sweep_seconds": sweep_seconds, "final_runs_seconds": final_seconds,
        "best_yaml": sweep.best_config_path, "results_dir": sweep.results_dir,
    }
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
