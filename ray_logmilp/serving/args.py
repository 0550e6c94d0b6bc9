"""The serving app's settings: the builder's ``args`` (``AppArgs``), the live batching settings
(``user_config``) and the Serve config file they come from. Checked by the project's config engine, so
an error names the key (``args.max_top_k: ...``) and an unknown key gets a did-you-mean; nothing here
imports Ray, torch or FastAPI at module level."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, Optional

from ray_logmilp.config import ConfigError, from_dict, require

#: The deployment the app builds; serve/config.yaml configures it by this name.
DEPLOYMENT_NAME = "LogMILPDetector"
#: How serve/config.yaml names the builder (``import_path: serve.app:build_app``).
BUILDER = ":build_app"
DEFAULT_MAX_ONGOING_REQUESTS = 128
#: Where the HTTP proxy listens when neither the config file nor the user says: this machine only.
DEFAULT_HOST = "127.0.0.1"


@dataclass
class AppArgs:
    """Arguments of ``build_app`` (the ``args:`` of the application in serve/config.yaml)."""

    bundle: str = ""
    """Model bundle folder: a local path or a URI (s3://, gs://, ...). Required."""
    max_lines_per_window: int = 1024
    """More lines in one window -> 413 (also capped by the model's max_len)."""
    max_windows_per_request: int = 256
    """More windows in one request -> 413."""
    max_lines_per_request: int = 65536
    """More lines in one request -> 413."""
    max_line_bytes: int = 16384
    """Longer lines are quarantined (line_too_long), not rejected."""
    max_body_bytes: int = 64 << 20
    """Larger request bodies -> 413 before parsing."""
    default_top_k: int = 5
    """top_k when a request gives none."""
    max_top_k: int = 100
    """Larger top_k -> 422."""
    perturbation: Literal["zero", "mask"] = "zero"
    """How the counterfactual removes the top line: zero it (the paper) or mask it out."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when the replica was given a GPU (ray_actor_options.num_gpus), else cpu."""
    torch_threads: Optional[int] = None
    """torch intra-op threads (default: Ray's, = the replica's num_cpus)."""
    request_timeout_s: float = 60.0
    """A request waiting longer for the model gets 503."""
    body_timeout_s: float = 10.0
    """A request body not fully received this many seconds after the request reached its replica gets
    408, which frees the replica's slot (Serve's HTTP proxy never times out a slow body by itself)."""

    def __post_init__(self) -> None:
        require(bool(self.bundle.strip()), "bundle", "is required: a model bundle folder (local path or URI)")
        for name in ("max_lines_per_window", "max_windows_per_request", "max_lines_per_request", "max_line_bytes",
                     "max_body_bytes", "default_top_k", "max_top_k"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.torch_threads is None or self.torch_threads >= 1, "torch_threads",
                f"must be >= 1 (or null for Ray's default), got {self.torch_threads}")
        for name in ("request_timeout_s", "body_timeout_s"):
            require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        require(self.default_top_k <= self.max_top_k, "default_top_k",
                f"({self.default_top_k}) must be <= max_top_k ({self.max_top_k})")


@dataclass
class BatchingConfig:
    """The deployment's ``user_config``: applied live by ``reconfigure`` (no replica restart)."""

    max_batch_size: int = 32
    """Windows per model call."""
    batch_wait_timeout_s: float = 0.002
    """How long Serve's batcher waits to fill a batch."""

    def __post_init__(self) -> None:
        require(self.max_batch_size >= 1, "max_batch_size", f"must be >= 1, got {self.max_batch_size}")
        require(self.batch_wait_timeout_s >= 0, "batch_wait_timeout_s",
                f"must be >= 0, got {self.batch_wait_timeout_s}")


def app_args(args: "AppArgs | dict[str, Any]") -> AppArgs:
    """``AppArgs`` from the builder's ``args`` mapping (errors name ``args.<key>``)."""
    return args if isinstance(args, AppArgs) else from_dict(AppArgs, dict(args or {}), prefix="args.")


def batching(user_config: "dict[str, Any] | None", current: "BatchingConfig | None" = None) -> BatchingConfig:
    """``BatchingConfig`` from a ``user_config`` mapping, unset keys kept from ``current`` (or the defaults)."""
    from dataclasses import asdict

    return from_dict(BatchingConfig, {**asdict(current or BatchingConfig()), **(user_config or {})},
                     prefix="user_config.")


def load_config(path: "str | os.PathLike[str]") -> Any:
    """Read and validate a Serve config file (Ray's ``ServeDeploySchema``; imports Ray Serve's schema
    module but starts nothing)."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    with open(path, encoding="utf-8") as f:
        return ServeDeploySchema.model_validate(yaml.safe_load(f))


def builder_app(config: Any) -> Any:
    """The application of a Serve config (``load_config``) that ``build_app`` builds."""
    for app in config.applications:
        if app.import_path.endswith(BUILDER):
            return app
    raise ConfigError(f"no application has an import_path ending in {BUILDER!r} "
                      f"(found: {[a.import_path for a in config.applications]})")


def http_options(config: Any, **overrides: Any) -> dict[str, Any]:
    """``serve.start``'s ``http_options`` from a Serve config (``load_config``): the file's ``http_options``
    (host, port, ``request_timeout_s``, ``keep_alive_timeout_s``, ...), then the ``overrides`` that are
    not None. Every start path that calls ``serve.start`` itself uses this, so the file's timeouts apply
    there as they do under ``serve run``; the host is ``DEFAULT_HOST`` unless the file or an override
    names another."""
    options = {"host": DEFAULT_HOST, "port": config.http_options.port,
               **config.http_options.model_dump(exclude_unset=True)}
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


def deployment_options(app: Any) -> dict[str, Any]:
    """The options the config sets for ``DEPLOYMENT_NAME`` in ``app`` (those it leaves unset are left out)."""
    for dep in app.deployments or []:
        if dep.name == DEPLOYMENT_NAME:
            return dep.model_dump(exclude_unset=True, exclude={"name"})
    return {}
