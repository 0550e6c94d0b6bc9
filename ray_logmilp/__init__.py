"""ray-logmilp: weakly supervised log anomaly detection and localization (LogMILP) on Ray."""

__version__ = "0.1.0"
