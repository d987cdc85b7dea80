"""The study spec: one nested, validated model; its flat and stored forms read back to the same spec."""

from __future__ import annotations

import pytest
from conftest import REPO

from autopeft.errors import AutopeftError
from autopeft.schema import read_yaml
from autopeft.study import StudySpec


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_validates(path):
    assert StudySpec.from_dict(read_yaml(path)).what.task


def test_the_written_out_defaults_are_the_defaults():
    written = StudySpec.from_dict(read_yaml(REPO / "studies" / "rte-default.yaml"))
    assert written == StudySpec.from_dict({"task": "rte", "budget": "0.5%"})


def test_the_flat_and_the_stored_forms_read_back_to_the_same_spec(tmp_path):
    spec = StudySpec.from_dict(
        {"task": "mrpc", "budget": "1%", "epochs": 2, "first-rung": "1/9", "trials": 5, "runs-dir": str(tmp_path)}
    )
    assert StudySpec.from_dict(spec.flat()) == spec
    assert StudySpec.from_dict(spec.to_dict(masked=False) | {}).what == spec.what


def test_a_legacy_flat_spec_is_read():
    """What an earlier autopeft stored: ``proxy`` held the training, ``select_on`` the split, ``study_name``."""
    old = {"task": "rte", "budget": "2%", "study_name": "old", "proxy": {"epochs": 1.0, "max_train_samples": 64},
           "early_stopping": None}  # fmt: skip
    spec = StudySpec.from_dict(old)
    assert spec.where.study == "old" and spec.what.training.epochs == 1.0 and spec.what.scored_on == "validation"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": "red"}, "colour: unknown key; allowed:"),
        ({"epochs": -1}, "--epochs must be positive"),
        ({"scored-on": "test"}, "--scored-on"),
    ],
)
def test_bad_keys_and_values_are_one_line_errors_naming_the_option(options, message):
    with pytest.raises(AutopeftError, match=message) as info:
        StudySpec.from_dict({"task": "rte", "budget": "1%", **options})
    assert "\n" not in str(info.value)
