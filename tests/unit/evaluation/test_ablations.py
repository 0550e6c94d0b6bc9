"""The ablation rows of configs/ablations.yaml: valid, each one a change, selectable by name or prefix."""
from __future__ import annotations

from pathlib import Path

import pytest

from ray_logmilp.config import ConfigError, load_project, to_dict
from ray_logmilp.evaluation.ablations import AblationRow, ablation_rows, load_ablations, select_rows

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.fixture(scope="module")
def rows() -> list[AblationRow]:
    return load_ablations()


def test_every_ablation_row_is_a_valid_override_that_changes_the_config(rows):
    # `jobs/evaluate.py --ablation` trains each row after the main seeds; a row that fails to parse would
    # only show after an hour of training, and a row that changes nothing would report the defaults twice.
    for config in sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "ablations.yaml"):
        base = to_dict(load_project(config, []))
        unchanged = [r.name for r in rows if to_dict(load_project(config, r.overrides)) == base]
        assert unchanged == [], f"{config.name}: rows that change nothing: {unchanged}"


def test_ablation_rows_the_config_already_has_are_skipped(rows):
    changed, same = ablation_rows(CONFIGS / "synthetic.yaml", [], rows)
    assert same == [] and changed == rows
    changed, same = ablation_rows(CONFIGS / "synthetic.yaml", ["model.use_prototypes=false"], rows)
    assert same == ["w/o prototypes"]
    assert [r.name for r in changed] == [r.name for r in rows if r.name != "w/o prototypes"]


def test_rows_are_chosen_by_name_or_unique_prefix_in_the_order_given(rows):
    assert select_rows(rows, None) == rows
    chosen = select_rows(rows, "mask perturbation, w/o L_i,w/o prot,mask")
    assert [r.name for r in chosen] == ["mask perturbation", "w/o L_inst", "w/o prototypes"]
    # An exact name wins over being the prefix of a longer one.
    extra = rows + [AblationRow(name="w/o L_inst and more", overrides=["loss.lambda_i=0"], why="a longer name")]
    assert [r.name for r in select_rows(extra, "w/o L_inst")] == ["w/o L_inst"]


@pytest.mark.parametrize("selection,problem", [
    ("w/o", "is a prefix of 6 rows"),
    ("w/o protoypes", "matches no row; did you mean 'w/o prototypes'?"),
    ("train.epochs=3", "an override?"),
    (",", "names no row"),
])
def test_a_selection_that_is_not_one_row_lists_the_rows(rows, selection, problem):
    with pytest.raises(ConfigError) as err:
        select_rows(rows, selection)
    assert problem in str(err.value)
    assert all(repr(r.name) in str(err.value) for r in rows)


@pytest.mark.parametrize("text,problem", [
    ("- {name: a, overrides: [loss.lambda_i=0], why: x, note: y}", "unknown key 'ablations.yaml[0].note'"),
    ("- {name: 'a,b', overrides: [loss.lambda_i=0], why: x}", "ablations.yaml[0].name: must not contain a comma"),
    ("- {name: a, overrides: [], why: x}", "ablations.yaml[0].overrides"),
    ("- {name: a, overrides: [lambda_i], why: x}", "not of the form key.path=value"),
    ("- {name: a, overrides: [loss.lambda_i=0], why: x}\n- {name: a, overrides: [loss.lambda_l=0], why: y}",
     "duplicate row names ['a']"),
    ("{name: a}", "expected a non-empty list"),
])
def test_a_bad_ablations_file_names_the_row_and_key(tmp_path, text, problem):
    path = tmp_path / "ablations.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_ablations(path)
    assert problem in str(err.value)
