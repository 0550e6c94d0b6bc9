"""``python serve/app.py``: serve a bundle with the settings of a Serve config file, flags on top."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any, Optional

from ray_logmilp.config import ConfigError, to_dict


def _parser(default_config: "str | os.PathLike[str] | None") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve a LogMILP bundle over HTTP with Ray Serve.")
    p.add_argument("--bundle", default=None, help="model bundle folder (local path or URI); default: the config's "
                                                  "args.bundle")
    p.add_argument("--config", default=None if default_config is None else str(default_config),
                   required=default_config is None, help="Serve config whose app settings to use")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved app args (config file + flags) as YAML and exit, without starting Ray")
    p.add_argument("--host", default=None, help="address to listen on (default: the config's http_options.host, "
                                                "else 127.0.0.1); 0.0.0.0 exposes the API to the network")
    p.add_argument("--port", type=int, default=None, help="default: the config's http_options.port")
    p.add_argument("--address", default=None, help="Ray address (default: start a local Ray or use RAY_ADDRESS)")
    p.add_argument("--num-replicas", type=int, default=None, help="fixed replicas instead of autoscaling")
    p.add_argument("--max-batch-size", type=int, default=None)
    p.add_argument("--batch-wait-timeout-s", type=float, default=None)
    p.add_argument("--max-ongoing-requests", type=int, default=None)
    p.add_argument("--num-gpus", type=float, default=None, help="GPUs per replica (0 = CPU replicas)")
    return p


def _deployment_flags(a: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """Deployment options the flags set, on top of the config's options ``base``."""
    dep: dict[str, Any] = {}
    user_config = dict(base.get("user_config") or {})
    if a.max_batch_size is not None:
        user_config["max_batch_size"] = a.max_batch_size
    if a.batch_wait_timeout_s is not None:
        user_config["batch_wait_timeout_s"] = a.batch_wait_timeout_s
    if user_config:
        dep["user_config"] = user_config
    if a.num_replicas is not None:
        dep["num_replicas"] = a.num_replicas
    if a.max_ongoing_requests is not None:
        dep["max_ongoing_requests"] = a.max_ongoing_requests
    if a.num_gpus is not None:
        dep["ray_actor_options"] = {**(base.get("ray_actor_options") or {}), "num_gpus": a.num_gpus}
    return dep


def main(argv: Optional[list[str]] = None, *, default_config: "str | os.PathLike[str] | None" = None) -> int:
    a = _parser(default_config).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ray_logmilp.serving.args import app_args, builder_app, deployment_options, http_options, load_config

    overrides = {} if a.bundle is None else {"bundle": a.bundle}
    try:
        config = load_config(a.config)
        spec = builder_app(config)
        args = app_args({**(spec.args or {}), **overrides})
    except ConfigError as exc:
        print(f"configuration error: {a.config}: {exc}", file=sys.stderr)
        return 2
    if a.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(args), sort_keys=False), end="")
        return 0

    import ray
    from ray import serve

    from ray_logmilp.serving.deployment import app_from_config

    dep = _deployment_flags(a, deployment_options(spec))
    try:
        app, prefix = app_from_config(a.config, args=overrides, deployment=dep)
    except ConfigError as exc:          # a bad bundle too: one line, before Ray starts
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    http = http_options(config, host=a.host, port=a.port)  # the file's timeouts too, as under `serve run`
    ray.init(address=a.address)
    serve.start(http_options=http)
    serve.run(app, name="logmilp", route_prefix=prefix)
    url = f"http://{http['host']}:{http['port']}"
    print(f"serving {args.bundle} at {url}{prefix.rstrip('/')}/v1/detect (docs: {url}/docs); Ctrl-C stops",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
