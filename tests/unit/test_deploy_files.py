"""The deployment files are valid for the Ray they ship with (file checks only; nothing is launched).

* ``cluster.yaml``: the autoscaler schema bundled with the installed Ray (``ray/autoscaler/ray-schema.json``)
  and the checks ``ray up`` runs before touching a cloud (``prepare_config`` + ``validate_config``);
  then what this project needs from it (node types, pins, token auth, comments for what a user edits).
* ``deploy/fake_multinode.yaml``: the same schema, plus the keys the v1 autoscaler reads without defaults
  (tests/integration/test_autoscaler.py runs it for real).
* ``deploy/kuberay/*.yaml``: the fields the KubeRay CRDs (ray.io/v1) require, ``rayVersion`` equal to the
  installed Ray, and the parts that must agree with the project (job overrides are valid config keys,
  the Serve application matches serve/config.yaml).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")
jsonschema = pytest.importorskip("jsonschema")

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
FAKE_YAML = REPO_ROOT / "deploy" / "fake_multinode.yaml"
KUBERAY_DIR = REPO_ROOT / "deploy" / "kuberay"
IMAGE_ROOT = "/home/ray/ray-logmilp"          # where the image keeps the repository (README.md, "From a laptop to a cluster")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _schema() -> dict:
    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    assert path.exists(), f"the installed Ray has no autoscaler schema at {path}"
    return json.loads(path.read_text())


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _torch_pin() -> str:
    """torch==X.Y.Z from the Makefile (what `make install` puts in the venv)."""
    match = re.search(r"^TORCH_SPEC \?= (torch==[\d.]+)\s*$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile has no TORCH_SPEC ?= torch==X.Y.Z line"
    return match.group(1)


# --------------------------------------------------------------------------------------------------
# cluster.yaml
# --------------------------------------------------------------------------------------------------

def test_cluster_yaml_matches_the_autoscaler_schema_of_the_installed_ray():
    config = _load(CLUSTER_YAML)
    jsonschema.validate(config, _schema())
    # What `ray up` runs before it talks to the cloud: defaults of the provider merged in, then validated.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_schema_check_is_not_vacuous():
    config = _load(CLUSTER_YAML)
    for breakage in ({"idle_timeout_minute": 5}, {"max_workers": -1}):
        broken = {**copy.deepcopy(config), **breakage}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, _schema())
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["node_config_typo"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _schema())


def test_cluster_yaml_node_types():
    config = _load(CLUSTER_YAML)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    is_gpu = {name: t["node_config"]["InstanceType"].split(".")[0][0] in "gp" for name, t in workers.items()}
    cpu_types = [n for n, gpu in is_gpu.items() if not gpu]
    gpu_types = [n for n, gpu in is_gpu.items() if gpu]
    assert not head["node_config"]["InstanceType"].startswith(("g", "p")), "the head should be a CPU instance"
    assert cpu_types and gpu_types, f"need a CPU worker type for Ray Data and a GPU one for training: {is_gpu}"
    for name in cpu_types + gpu_types:
        assert types[name]["min_workers"] == 0, f"{name} should scale from 0"
        assert 1 <= types[name]["max_workers"] <= config["max_workers"], name
    assert config["idle_timeout_minutes"] > 0
    assert config["provider"]["type"] in {"aws", "gcp", "azure"}
    assert config["provider"].get("cache_stopped_nodes") is False, "idle nodes should be terminated, not stopped"


def test_cluster_yaml_installs_the_project_with_the_pinned_ray_and_torch():
    config = _load(CLUSTER_YAML)
    ray_pin = f"=={ray.__version__}"
    torch_pin = _torch_pin()
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    major_minor = ".".join(ray.__version__.split(".")[:2])
    assert f"=={major_minor}.*" in pyproject or ray_pin in pyproject, "pyproject pins another Ray than installed"

    def commands_for(node_type: str) -> list[str]:
        t = config["available_node_types"][node_type]
        if node_type == config["head_node_type"]:
            return config["setup_commands"] + config["head_setup_commands"]
        # A node type's own worker_setup_commands replace the global setup and worker setup commands.
        if "worker_setup_commands" in t:
            return t["worker_setup_commands"]
        return config["setup_commands"] + config["worker_setup_commands"]

    for node_type in config["available_node_types"]:
        script = "\n".join(commands_for(node_type))
        assert torch_pin in script, f"{node_type} does not install {torch_pin}"
        assert re.search(rf"ray\[[a-z,]+\]{re.escape(ray_pin)}", script), f"{node_type} does not pin Ray {ray_pin}"
        assert "~/ray-logmilp" in script, f"{node_type} does not install the project"
        # torch before the project, or pip resolves torch itself (the CUDA wheel on CPU nodes).
        assert script.index(torch_pin) < script.index("~/ray-logmilp"), node_type
        gpu = config["available_node_types"][node_type]["node_config"]["InstanceType"][0] in "gp"
        cpu_wheel = "download.pytorch.org/whl/cpu" in script
        assert cpu_wheel != gpu, f"{node_type}: CPU nodes take the CPU torch wheel, GPU nodes the CUDA one"
    assert config["file_mounts"].get("~/ray-logmilp") == ".", "the repository must be mounted where setup installs it"


def test_cluster_yaml_token_auth_and_comments_for_the_user():
    config = _load(CLUSTER_YAML)
    text = CLUSTER_YAML.read_text()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in config[key]), key
    assert "~/.ray/auth_token" in config["file_mounts"], "the token must reach every node"
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in " ".join(config["head_start_ray_commands"])
    edits = [line for line in text.splitlines() if "# EDIT" in line]
    assert len(edits) >= 8, "cluster.yaml should mark what a user edits with '# EDIT'"
    for needle in ("ray up", "ray job submit --working-dir .", "ray down", "ray dashboard"):
        assert needle in text, f"the header should show `{needle}`"


# --------------------------------------------------------------------------------------------------
# deploy/fake_multinode.yaml (run for real by tests/integration/test_autoscaler.py)
# --------------------------------------------------------------------------------------------------

def test_fake_multinode_config():
    config = _load(FAKE_YAML)
    jsonschema.validate(config, _schema())
    from ray.autoscaler._private.util import validate_config

    validate_config(copy.deepcopy(config))    # no prepare_config: its defaults file is what the wheel lacks
    assert config["provider"]["type"] == "fake_multinode"
    # The v1 autoscaler reads these directly (StandardAutoscaler.reset); missing ones are a KeyError there.
    for key in ("file_mounts", "cluster_synced_files", "worker_setup_commands", "worker_start_ray_commands",
                "auth", "available_node_types", "head_node_type", "max_workers", "idle_timeout_minutes"):
        assert key in config, key
    types = config["available_node_types"]
    assert set(types[config["head_node_type"]]["resources"]) == {"CPU"}
    train = [n for n, t in types.items() if "train_node" in t["resources"]]
    assert train and all(types[n]["min_workers"] == 0 and types[n]["max_workers"] >= 2 for n in train)
    assert config["idle_timeout_minutes"] <= 0.5, "keep the scale-down quick enough for a test to watch"


# --------------------------------------------------------------------------------------------------
# KubeRay manifests
# --------------------------------------------------------------------------------------------------

def _manifests() -> dict[str, dict]:
    out = {}
    for path in sorted(KUBERAY_DIR.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert len(docs) == 1, f"{path.name}: one object per file"
        out[docs[0]["kind"]] = docs[0] | {"_file": path.name}
    return out


def _cluster_spec(obj: dict) -> dict:
    return {"RayCluster": lambda o: o["spec"], "RayJob": lambda o: o["spec"]["rayClusterSpec"],
            "RayService": lambda o: o["spec"]["rayClusterConfig"]}[obj["kind"]](obj)


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_kuberay_has_rayjob_rayservice_and_raycluster():
    assert set(_manifests()) == {"RayCluster", "RayJob", "RayService"}


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob", "RayService"])
def test_kuberay_required_fields(kind):
    obj = _manifests()[kind]
    where = obj["_file"]
    assert obj["apiVersion"] == "ray.io/v1", where
    name = obj["metadata"]["name"]
    assert DNS_1123.match(name) and len(name) <= 47, f"{where}: {name!r} (KubeRay appends suffixes; keep it short)"
    spec = _cluster_spec(obj)
    assert spec["rayVersion"] == ray.__version__, f"{where}: rayVersion {spec['rayVersion']} != Ray {ray.__version__}"
    assert spec.get("enableInTreeAutoscaling") is True, where
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0, where
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: Ray token auth"

    head = spec["headGroupSpec"]
    groups = spec["workerGroupSpecs"]
    for label, group in [("headGroupSpec", head)] + [(g["groupName"], g) for g in groups]:
        # rayStartParams is required by older CRDs; all values are strings (map[string]string).
        params = group["rayStartParams"]
        assert isinstance(params, dict) and all(isinstance(v, str) for v in params.values()), f"{where}:{label}"
        containers = _containers(group)
        assert containers, f"{where}:{label}: no containers"
        for c in containers:
            assert c.get("name") and c.get("image"), f"{where}:{label}: container needs name and image"
            assert f"ray{ray.__version__}" in c["image"], f"{where}:{label}: image {c['image']} is not for Ray {ray.__version__}"
            limits = c.get("resources", {}).get("limits", {})
            assert "cpu" in limits and "memory" in limits, f"{where}:{label}: set CPU and memory limits"
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("PYTHONPATH") == IMAGE_ROOT, f"{where}:{label}: serve/ and tune/ import from {IMAGE_ROOT}"
    ports = {p["containerPort"] for c in _containers(head) for p in c.get("ports", [])}
    assert {6379, 8265} <= ports, f"{where}: head ports"
    names = [g["groupName"] for g in groups]
    assert len(names) == len(set(names)) and all(DNS_1123.match(n) for n in names), f"{where}: {names}"
    for g in groups:
        assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"], f"{where}:{g['groupName']}"


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_kuberay_training_clusters_have_cpu_and_gpu_groups(kind):
    spec = _cluster_spec(_manifests()[kind])
    gpu = {g["groupName"]: any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in _containers(g))
           for g in spec["workerGroupSpecs"]}
    assert any(gpu.values()) and not all(gpu.values()), gpu
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] == 0, f"{g['groupName']} should scale from 0"
        image = _containers(g)[0]["image"]
        assert image.endswith("-gpu") == gpu[g["groupName"]], f"{g['groupName']}: {image}"
    head_params = spec["headGroupSpec"]["rayStartParams"]
    assert head_params.get("num-cpus") == "0", "drivers only on the head"


def test_rayjob_entrypoint_is_a_valid_training_command():
    from ray_logmilp.config import load_project

    obj = _manifests()["RayJob"]
    spec = obj["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec.get("submissionMode", "K8sJobMode") in {"K8sJobMode", "HTTPMode", "InteractiveMode"}
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python"
    script = Path(argv[1].replace(IMAGE_ROOT, str(REPO_ROOT)))
    assert script.exists() and script.relative_to(REPO_ROOT).as_posix() == "jobs/train.py", argv[1]
    rest = argv[2:]
    config = Path(rest[rest.index("--config") + 1].replace(IMAGE_ROOT, str(REPO_ROOT)))
    assert config.exists(), config
    overrides = [a for a in rest if "=" in a and not a.startswith("--")]
    cfg = load_project(config, overrides)          # unknown keys / bad values raise ConfigError
    # Pods share no disk: every path the job takes is a URI.
    for path in (*cfg.data.inputs, cfg.data.output_dir, cfg.train.prepared_dir, cfg.train.storage_path,
                 cfg.train.bundle_dir):
        assert path and "://" in path, f"{path!r} should be a URI on shared storage"
    assert cfg.train.use_gpu is True, "with GPU pods scaled from 0, training must ask for GPUs explicitly"
    assert cfg.train.num_workers <= max(g["maxReplicas"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]
                                        if "gpu" in g["groupName"])


def test_rayservice_serve_config_matches_serve_config_yaml():
    obj = _manifests()["RayService"]
    serve_config = yaml.safe_load(obj["spec"]["serveConfigV2"])
    reference = _load(REPO_ROOT / "serve" / "config.yaml")
    assert [a["import_path"] for a in serve_config["applications"]] == \
        [a["import_path"] for a in reference["applications"]]
    module = serve_config["applications"][0]["import_path"].split(":")[0]
    assert (REPO_ROOT / (module.replace(".", "/") + ".py")).exists(), module
    for app, ref in zip(serve_config["applications"], reference["applications"]):
        assert set(app["args"]) <= set(ref["args"]), f"unknown args {set(app['args']) - set(ref['args'])}"
        assert "://" in app["args"]["bundle"], "the bundle must be on shared storage"
        assert [d["name"] for d in app["deployments"]] == [d["name"] for d in ref["deployments"]]
        for d in app["deployments"]:
            assert d["max_ongoing_requests"] >= d["user_config"]["max_batch_size"], "Serve would cap batches"
    assert serve_config["http_options"]["port"] in {
        p["containerPort"] for c in _containers(obj["spec"]["rayClusterConfig"]["headGroupSpec"])
        for p in c.get("ports", [])}
