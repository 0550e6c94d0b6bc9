"""The one config engine (``engine``) and the project's sections (``project``)."""
from ray_logmilp.config.engine import (ConfigError, apply_overrides, from_dict, get_dotted, load_stage, load_yaml,
                                       require, set_dotted, suggest, to_dict, unknown_key_message)
from ray_logmilp.config.project import (DataConfig, EmbeddingConfig, EvalConfig, LabelConfig, ProjectConfig,
                                        SplitConfig, TrainConfig, WindowConfig, load_project)

__all__ = ["ConfigError", "DataConfig", "EmbeddingConfig", "EvalConfig", "LabelConfig", "ProjectConfig",
           "SplitConfig", "TrainConfig", "WindowConfig", "apply_overrides", "from_dict", "get_dotted",
           "load_project", "load_stage", "load_yaml", "require", "set_dotted", "suggest", "to_dict",
           "unknown_key_message"]
