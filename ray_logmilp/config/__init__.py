"""The one config engine: typed sections, YAML files, dotted overrides, errors that name the flag."""
from ray_logmilp.config.project import (ConfigError, DataConfig, EmbeddingConfig, EvalConfig, LabelConfig,
                                        ProjectConfig, SplitConfig, TrainConfig, WindowConfig, apply_overrides,
                                        from_dict, load_project, load_stage, load_yaml, to_dict)

__all__ = ["ConfigError", "DataConfig", "EmbeddingConfig", "EvalConfig", "LabelConfig", "ProjectConfig",
           "SplitConfig", "TrainConfig", "WindowConfig", "apply_overrides", "from_dict", "load_project",
           "load_stage", "load_yaml", "to_dict"]
