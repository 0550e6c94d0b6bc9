"""Training benchmark: Ray Train (TorchTrainer) vs the same fit() in plain PyTorch, same data, same run.

    python bench/train.py [--lines 60000] [--epochs 3]

Reports bags/s of the training steps for: plain fit() in this process; Ray Train with 1 worker given every
CPU; Ray Train with 2 workers (DDP, the CPUs split between the ranks). Ray's per-step overhead is
1 − (Ray 1-worker bags/s ÷ plain bags/s); start-up (cluster, worker group, data loading, bundle) is
reported separately as Ray's wall time minus the time inside epochs. GPU: when CUDA is present every
run uses it (bf16), the JSON notes each run's device and peak GPU memory, and DDP runs only as wide as
there are GPUs (one rank per GPU).
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    import ray
    import torch

    from ray_logmilp.config import load_project
    from ray_logmilp.ingest.pipeline import prepare
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate
    from ray_logmilp.train import train_local, train_with_ray

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="logmilp-bench-train-"))
    generate(SyntheticConfig(n_lines=args.lines, seed=0), work / "corpus")
    base = [f"data.inputs=[{work / 'corpus' / 'corpus.log'}]", f"data.output_dir={work / 'prepared'}",
            f"train.epochs={args.epochs}", f"train.storage_path={work / 'runs'}"]
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    prepare(load_project(CONFIG, base).data, progress=False)

    def per_epoch(history):
        # Skip epoch 0 (warm-up: allocator, first-touch) when there are more.
        rows = history[1:] if len(history) > 1 else history
        return float(np.mean([r["bags_per_second"] for r in rows])), float(sum(r["train_seconds"] for r in history))

    out: dict = {"benchmark": "train", "lines": args.lines, "epochs": args.epochs,
                 "device": "cuda" if torch.cuda.is_available() else "cpu"}
    cfg = load_project(CONFIG, base + [f"train.bundle_dir={work / 'm_plain'}"])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    plain = train_local(cfg, run_dir=str(work / "plain_run"))
    plain_wall = time.perf_counter() - t0
    plain_bps, plain_train_s = per_epoch(plain.history)
    out["plain"] = {"bags_per_second": round(plain_bps, 1), "wall_seconds": round(plain_wall, 1),
                    **gpu_memory(plain.history)}

    cpus = os.cpu_count() or 1
    gpus = int(ray.cluster_resources().get("GPU", 0))
    # With GPUs each rank takes one, so DDP runs only as wide as the GPUs go (a 2-worker run on one GPU
    # would wait for a second GPU forever).
    worker_counts = [w for w in (1, 2) if not gpus or w <= gpus]
    for workers in worker_counts:
        # The 1-worker run gets the whole machine, as the plain run has: Ray sets OMP_NUM_THREADS to a
        # worker's CPU count, so a 1-CPU worker would run torch on one thread and the comparison would
        # measure thread count, not Ray. The DDP run splits the machine between its ranks.
        per_worker = max(1, cpus // workers)
        cfg = load_project(CONFIG, base + [f"train.bundle_dir={work / f'm_ray{workers}'}",
                                           f"train.num_workers={workers}", f"train.resources_per_worker={{CPU: {per_worker}}}"])
        t0 = time.perf_counter()
        res = train_with_ray(cfg)
        wall = time.perf_counter() - t0
        bps, train_s = per_epoch(res.history)
        # Each rank reports its own rate; the group trains world_size times as many bags per step.
        group_bps = bps * workers
        epoch_time = sum(r["train_seconds"] for r in res.history)
        out[f"ray_{workers}_worker"] = {"bags_per_second": round(group_bps, 1), "wall_seconds": round(wall, 1),
                                        "cpus_per_worker": per_worker,
                                        "startup_and_teardown_seconds": round(wall - epoch_time, 1),
                                        **gpu_memory(res.history)}
    out["ray_per_step_overhead"] = round(1 - out["ray_1_worker"]["bags_per_second"] / out["plain"]["bags_per_second"], 3)
    if "ray_2_worker" in out:
        out["ddp_2_vs_1_worker"] = round(out["ray_2_worker"]["bags_per_second"] / out["ray_1_worker"]["bags_per_second"], 2)
    else:
        out["ddp_2_vs_1_worker"] = f"not run: {gpus} GPU(s), a 2-worker GPU run needs 2"
    out["targets"] = {"ray_per_step_overhead<=0.10": out["ray_per_step_overhead"] <= 0.10}
    ray.shutdown()
    print(json.dumps(out))
    return 0


def gpu_memory(history: list[dict]) -> dict:
    """Peak GPU memory of the training process (reported by fit() each epoch), when it ran on a GPU."""
    peaks = [r["gpu_peak_memory_mb"] for r in history if "gpu_peak_memory_mb" in r]
    return {"gpu_peak_memory_mb": round(max(peaks), 1), "device": history[-1]["device"]} if peaks else {}


if __name__ == "__main__":
    sys.exit(main())
