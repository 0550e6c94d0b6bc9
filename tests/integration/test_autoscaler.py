"""Autoscaling shown on one machine: Ray's fake multi-node provider with the project's own config.

`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=deploy/fake_multinode.yaml` runs the real v1
autoscaler; its provider starts "nodes" as extra raylets on this host. Training asks for the
`train_worker` node type through a custom resource (train.resources_per_worker={train_node: 1}), the
autoscaler adds two such nodes, DDP runs on them, and once idle they are terminated by the autoscaler.

Ray's own ``ray.cluster_utils.AutoscalingCluster`` cannot do this with the 2.60 wheel (it reads a
``fake_multi_node/example.yaml`` the wheel lacks, and it runs ``ray stop --force``, which would kill every
Ray process on the machine), hence the head from tests/integration/ray_head.py. The provider's
``gcs_address`` lets the head use a free port instead of the default 6379.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .ray_head import REPO_ROOT, free_port, ray_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAKE_CONFIG = REPO_ROOT / "deploy" / "fake_multinode.yaml"
SMALL = ["train.epochs=2", "model.hidden_dim=32", "model.ff_dim=64",
         "model.num_prototypes=4", "data.window.size=32", "data.window.stride=32", "train.max_failures=0"]


def _train_nodes(nodes: list[dict]) -> list[dict]:
    return [n for n in nodes if "train_node" in (n.get("resources_total") or {})]


@pytest.mark.timeout(600)
def test_fake_autoscaler_adds_train_nodes_and_removes_them_when_idle(tmp_path):
    """Head with 1 CPU and no `train_node` resource; a 2-worker training run needs two `train_worker` nodes.
    (~55-70 s on 2 cores: head ~10 s, prepare + scale-up + training ~40 s, idle scale-down ~5-15 s)
    """
    from ray_logmilp.bundle import load_bundle

    config = yaml.safe_load(FAKE_CONFIG.read_text())
    gcs_port = free_port()
    config["provider"]["gcs_address"] = f"127.0.0.1:{gcs_port}"
    config_path = tmp_path / "fake_multinode.yaml"
    config_path.write_text(yaml.safe_dump(config))
    head_cpus = config["available_node_types"]["ray.head.default"]["resources"]["CPU"]

    corpus_dir = tmp_path / "corpus"
    subprocess.run([sys.executable, "-m", "ray_logmilp.synthetic", "--out", str(corpus_dir), "--lines", "20000",
                    "--seed", "0", "--quiet"], check=True, cwd=REPO_ROOT, timeout=120, capture_output=True)
    prepared, bundle = (tmp_path / "prepared").as_uri(), (tmp_path / "model").as_uri()

    with ray_head(num_cpus=head_cpus, gcs_port=gcs_port, extra_args=(f"--autoscaling-config={config_path}",),
                  extra_env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}) as head:
        assert [n["is_head_node"] for n in head.state("nodes") if n["state"] == "ALIVE"] == [True]

        t0 = time.monotonic()
        train = subprocess.run(
            [sys.executable, "jobs/train.py", "--config", "configs/synthetic.yaml", "--prepare",
             f"data.inputs=[{(corpus_dir / 'corpus.log').as_uri()}]", f"data.output_dir={prepared}",
             f"train.prepared_dir={prepared}", f"train.bundle_dir={bundle}",
             f"train.storage_path={(tmp_path / 'ray_results').as_uri()}", "train.run_name=autoscaled",
             "train.num_workers=2", "train.resources_per_worker={CPU: 1, train_node: 1}",
             "train.use_gpu=false", *SMALL],
            cwd=REPO_ROOT, env=head.client_env(), capture_output=True, text=True, timeout=420)
        print(f"prepare + train with scale-up: {time.monotonic() - t0:.1f}s")
        assert train.returncode == 0, f"{train.stdout[-3000:]}\n{train.stderr[-6000:]}{head.diagnose()}"

        # Scale-up: the autoscaler added train_worker nodes, and the DDP workers ran on them.
        added = _train_nodes(head.state("nodes"))
        assert len(added) >= 2, f"expected 2 train_worker nodes, got {added}"
        worker_nodes = {a["node_id"] for a in head.state("actors") if "RayTrainWorker" in (a.get("class_name") or "")}
        assert len(worker_nodes) == 2 and worker_nodes <= {n["node_id"] for n in added}, worker_nodes

        # Scale-down: idle for idle_timeout_minutes (6 s here) -> terminated by the autoscaler.
        t0 = time.monotonic()
        deadline = t0 + 120
        while time.monotonic() < deadline:
            nodes = head.state("nodes")
            if not [n for n in _train_nodes(nodes) if n["state"] == "ALIVE"]:
                break
            time.sleep(2)
        print(f"idle train nodes removed after {time.monotonic() - t0:.1f}s")
        gone = _train_nodes(nodes)
        assert gone and all(n["state"] == "DEAD" for n in gone), \
            [(n["node_id"][-5:], n["state"], n.get("state_message")) for n in gone] + [head.diagnose()]
        assert [n["is_head_node"] for n in nodes if n["state"] == "ALIVE"] == [True]
        # ...and it was the autoscaler's idle rule that removed the nodes the DDP workers ran on.
        monitor_log = "\n".join(p.read_text(errors="replace")
                                for p in Path(head.temp_dir).glob("session_*/logs/monitor.log"))
        idle_removed = set(re.findall(r"Terminating the node with id (\w+) .*\(idle\)", monitor_log))
        assert worker_nodes <= idle_removed, (worker_nodes, idle_removed)
        assert "Adding" in monitor_log and "train_worker" in monitor_log

    assert load_bundle(bundle).manifest["epoch"] in (0, 1)
