"""The ablation rows of Table III, read from ``configs/ablations.yaml``, and which of them to train.

Torch-free: ``jobs/evaluate.py --ablation`` checks the rows it was asked for before any training starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ray_logmilp.config import ConfigError, from_dict, load_project, require, suggest, to_dict
from ray_logmilp.config.engine import apply_overrides

#: The rows shipped with the repository.
ABLATIONS_FILE = Path(__file__).resolve().parents[2] / "configs" / "ablations.yaml"


@dataclass
class AblationRow:
    """One variant: the full config with ``overrides`` on top."""

    name: str = ""
    """Row label in the report and the name ``--ablation`` selects by (no commas: they separate names)."""
    overrides: list[str] = field(default_factory=list)
    """Dotted ``key=value`` overrides, as on the command line."""
    why: str = ""
    """What the row asks, in one line."""

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "name", "must be a non-empty label")
        require("," not in self.name, "name", f"must not contain a comma (--ablation splits on them): {self.name!r}")
        require(bool(self.overrides), "overrides", "must list at least one key=value override")
        require(bool(self.why.strip()), "why", "must say in one line what the row asks")
        apply_overrides({}, self.overrides)   # a malformed override fails here, not after the full model trained


def load_ablations(path: str | Path = ABLATIONS_FILE) -> list[AblationRow]:
    """The rows of an ablations file (a YAML list of ``{name, overrides, why}``), in file order."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"ablations file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"ablations file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, list) or not data:
        raise ConfigError(f"ablations file {p}: expected a non-empty list of rows (name, overrides, why)")
    rows = [from_dict(AblationRow, row, prefix=f"{p.name}[{i}].") for i, row in enumerate(data)]
    names = [r.name for r in rows]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"ablations file {p}: duplicate row names {dupes}")
    return rows


def select_rows(rows: list[AblationRow], selection: str | None) -> list[AblationRow]:
    """The rows ``--ablation`` names: comma-separated names or unique prefixes of names; None = every row."""
    if selection is None:
        return list(rows)
    names = [r.name for r in rows]
    chosen: list[AblationRow] = []
    for want in (s.strip() for s in selection.split(",")):
        if not want:
            continue
        matches = [r for r in rows if r.name == want] or [r for r in rows if r.name.startswith(want)]
        if len(matches) != 1:
            if matches:
                problem = f"is a prefix of {len(matches)} rows"
            else:
                guess = suggest(want, names)
                problem = "matches no row" + (f"; did you mean {guess!r}?" if guess else "")
                if "=" in want:   # argparse gave --ablation the override that followed it
                    problem += " (an override? write --ablation=ROW, or put --ablation after the overrides)"
            raise ConfigError(f"--ablation {want!r} {problem}; the rows are: "
                              + "; ".join(repr(n) for n in names))
        if matches[0] not in chosen:
            chosen.append(matches[0])
    if not chosen:
        raise ConfigError("--ablation names no row; the rows are: " + "; ".join(repr(n) for n in names))
    return chosen


def ablation_rows(config_path, overrides: list[str],
                  rows: list[AblationRow]) -> tuple[list[AblationRow], list[str]]:
    """The ``rows`` that change the model under this config, and the names of those that do not (the
    config already has them): training those would only repeat the full model's seeds."""
    full = to_dict(load_project(config_path, overrides))
    changed, same = [], []
    for row in rows:
        if to_dict(load_project(config_path, overrides + row.overrides)) == full:
            same.append(row.name)
        else:
            changed.append(row)
    return changed, same
