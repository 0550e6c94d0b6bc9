"""Ingest benchmark: end-to-end prepare on Ray Data vs a plain sequential drain3 loop, same run.

    python bench/ingest.py                       # 2M and 8M lines for throughput, 1M and 4M for memory
    python bench/ingest.py --lines 2000000 8000000 --memory-lines 1000000 4000000

End to end = read -> format -> template -> bag -> parquet (``ray_logmilp.pipeline.prepare``), Ray started
with the machine's CPUs. The plain alternative = ``add_log_message`` on every message with the same masking
(Python ``re``), over the same message strings, timed alone (reading and header parsing not counted, which
favours the baseline). Memory = peak RSS of the driver and of all Ray worker processes, sampled every
0.1 s, for two corpus sizes: streaming means it must not grow in proportion to the corpus.
Throughput is measured at each ``--lines`` size: prepare has a fixed cost (Ray Data starting its
workers, writing the splits) that the per-line rate amortises, so the ratio is reported per size, with
the fixed cost and the marginal rate fitted from the two smallest sizes.
The last line printed is JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _rss_sampler(stop: threading.Event, out: dict) -> None:
    import psutil

    me = psutil.Process()
    peak_driver = peak_workers = 0
    while not stop.is_set():
        try:
            peak_driver = max(peak_driver, me.memory_info().rss)
            total = 0
            for p in psutil.process_iter(["cmdline"]):
                cmd = " ".join(p.info.get("cmdline") or [])
                if "ray::" in cmd or "default_worker.py" in cmd:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            peak_workers = max(peak_workers, total)
        except Exception:
            pass
        stop.wait(0.1)
    out["driver_peak_rss_mb"] = round(peak_driver / 2**20, 1)
    out["workers_peak_rss_mb"] = round(peak_workers / 2**20, 1)


def run_prepare(corpus: Path, out_dir: Path) -> dict:
    """One prepare run in this process with RSS sampling; returns timing, counts and memory."""
    import ray

    from ray_logmilp.config import load_project
    from ray_logmilp.ingest.pipeline import prepare

    cfg = load_project(None, [f"data.inputs=[{corpus}]", f"data.output_dir={out_dir}", "data.format=bgl",
                              "data.window.size=64"])
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    stop, mem = threading.Event(), {}
    sampler = threading.Thread(target=_rss_sampler, args=(stop, mem), daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    manifest = prepare(cfg.data, progress=False)
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    ray.shutdown()
    return {"lines": manifest["lines"]["read"], "seconds": round(seconds, 2),
            "lines_per_second": round(manifest["lines"]["read"] / seconds), "templates": manifest["templates"],
            "bags": manifest["bags"]["total"], **mem}


def baseline(corpus_events: Path) -> tuple[dict, "object"]:
    """The plain sequential drain3 loop over the same message strings (content column of events)."""
    import pyarrow.parquet as pq

    from ray_logmilp.ingest.format_spec import load_format
    from ray_logmilp.ingest.mining import sequential_drain_baseline
    from ray_logmilp.ingest.parsing import ParserConfig

    events = pq.read_table(corpus_events, columns=["line_no", "content", "template_id"])
    events = events.sort_by("line_no")
    messages = events.column("content").to_pylist()
    t0 = time.perf_counter()
    ids = sequential_drain_baseline(messages, ParserConfig.from_format(load_format("bgl")))
    seconds = time.perf_counter() - t0
    return ({"lines": len(messages), "seconds": round(seconds, 2),
             "lines_per_second": round(len(messages) / seconds)}, (ids, events.column("template_id").to_numpy()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[2_000_000, 8_000_000],
                        help="corpus sizes for the throughput comparison (each >= 2M for the target)")
    parser.add_argument("--memory-lines", type=int, nargs="*", default=[1_000_000, 4_000_000])
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--child", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:   # memory runs happen in fresh processes so peaks do not carry over
        print(json.dumps(run_prepare(Path(args.child[0]), Path(args.child[1]))))
        return 0

    from ray_logmilp.ingest.mining import grouping_accuracy
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="logmilp-bench-ingest-"))
    result: dict = {"benchmark": "ingest", "cpus": os.cpu_count()}
    sizes = sorted({*args.lines, *args.memory_lines})
    corpora = {}
    for n in sizes:
        t0 = time.perf_counter()
        generate(SyntheticConfig(n_lines=n, seed=0), work / f"corpus_{n}")
        corpora[n] = work / f"corpus_{n}" / "corpus.log"
        print(f"generated {n:,} lines in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    runs = {}
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--child", str(corpora[n]), str(work / f"prepared_{n}")],
                              capture_output=True, text=True, check=True)
        runs[n] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"prepare {n:,} lines: {runs[n]}", file=sys.stderr)

    result["throughput"] = {}
    for n in sorted(args.lines):
        base, (base_ids, our_ids) = baseline(work / f"prepared_{n}" / "events.parquet")
        print(f"plain drain3 loop, {n:,} lines: {base}", file=sys.stderr)
        result["throughput"][str(n)] = {
            "end_to_end": runs[n], "plain_drain3_loop": base,
            "ratio": round(runs[n]["lines_per_second"] / base["lines_per_second"], 2),
            "grouping_agreement": round(float(grouping_accuracy(our_ids, base_ids)), 5),
        }
    if len(args.lines) >= 2:   # prepare time ~ fixed + lines / marginal rate, from the two smallest sizes
        (n1, n2) = sorted(args.lines)[:2]
        t1, t2 = runs[n1]["seconds"], runs[n2]["seconds"]
        marginal = (n2 - n1) / max(t2 - t1, 1e-9)
        result["fixed_seconds"] = round(t1 - n1 / marginal, 2)
        result["marginal_lines_per_second"] = round(marginal)
        base_rate = result["throughput"][str(n1)]["plain_drain3_loop"]["lines_per_second"]
        result["marginal_ratio"] = round(marginal / base_rate, 2)
    result["memory"] = {str(n): {k: runs[n][k] for k in ("driver_peak_rss_mb", "workers_peak_rss_mb", "seconds")}
                        for n in args.memory_lines}
    if len(args.memory_lines) >= 2:
        lo, hi = min(args.memory_lines), max(args.memory_lines)
        total = {n: runs[n]["driver_peak_rss_mb"] + runs[n]["workers_peak_rss_mb"] for n in (lo, hi)}
        result["memory"]["peak_growth_ratio"] = round(total[hi] / total[lo], 2)
        result["memory"]["lines_ratio"] = round(hi / lo, 2)
    result["targets"] = {}
    for n, t in result["throughput"].items():
        result["targets"][f"throughput_ratio>=2 at {int(n):,} lines"] = t["ratio"] >= 2
        result["targets"][f"grouping_agreement>=0.99 at {int(n):,} lines"] = t["grouping_agreement"] >= 0.99
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
