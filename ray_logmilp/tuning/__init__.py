"""Hyperparameter sweeps: Ray Tune + Optuna (TPE) + ASHA over LogMILP's loss weights, prototype count and lr.

``space`` reads and checks a search-space file (no Ray), ``trainable`` is the Tune trial (``fit`` with a
``TuneContext``), ``run`` runs or resumes a sweep, ``results`` writes its tables, summary, best.yaml and
plots. Only bag labels reach the tuner. Importing the package starts nothing: Ray, torch, Optuna and
matplotlib are imported inside the functions that use them.
"""
from ray_logmilp.tuning.results import (SweepResult, best_config_yaml, build_tables, param_importances, plot_history,
                                        plot_importance, summarise, trial_walls, write_results)
from ray_logmilp.tuning.run import build_param_space, default_sweep_name, plan_resources, run_sweep
from ray_logmilp.tuning.space import (ObjectiveConfig, ParamSpec, ResourcesConfig, SchedulerConfig, SearchConfig,
                                      SweepSpec, apply_params, check_key, default_point, load_search_space,
                                      parse_search_space, spec_to_dict, split_overrides, validate_spec)
from ray_logmilp.tuning.trainable import TuneContext, objective_value, tune_trial, tuning_data

__all__ = ["ObjectiveConfig", "ParamSpec", "ResourcesConfig", "SchedulerConfig", "SearchConfig", "SweepResult",
           "SweepSpec", "TuneContext", "apply_params", "best_config_yaml", "build_param_space", "build_tables",
           "check_key", "default_point", "default_sweep_name", "load_search_space", "objective_value",
           "param_importances", "parse_search_space", "plan_resources", "plot_history", "plot_importance",
           "run_sweep", "spec_to_dict", "split_overrides", "summarise", "trial_walls", "tune_trial",
           "tuning_data", "validate_spec", "write_results"]
