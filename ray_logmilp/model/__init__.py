"""The LogMILP model (``logmilp``), its config sections (``config``), losses and localization."""
# The project config embeds this package's config sections and model/config.py validates with the config
# engine: importing the engine's package first lets either package be imported first.
import ray_logmilp.config  # noqa: F401
