"""Configuration files of ``evaluate`` and ``export`` read numbers as space files do."""

from __future__ import annotations

import json

import pytest

from autopeft.errors import ConfigError
from autopeft.export import read_config, write_export


def test_a_configuration_file_reads_exponent_numbers_and_yaml_1_2_booleans(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "methods:\n  lora: {targets: [[0, query, 8]], alpha: 16, dropout: 5e-2}\ntraining: {learning_rate: 1e-3}\n"
        "note: no\n"
    )
    config, document = read_config(path)
    assert config.training["learning_rate"] == 0.001 and config.methods["lora"]["dropout"] == 0.05
    assert document["note"] == "no"  # a word, as in space files


def test_a_malformed_configuration_file_is_one_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("methods: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        read_config(path)
    assert "malformed YAML" in str(info.value) and "\n" not in str(info.value)


def test_an_export_of_the_packaged_model_names_its_public_id_and_keeps_the_local_path(tmp_path):
    from autopeft.methods import METHODS
    from autopeft.methods.config import TrialConfig
    from autopeft.models import PACKAGED_MODEL_ID, backbone_info, default_model, public_model_id

    info = backbone_info(default_model(), 2)
    config = TrialConfig({"lora": METHODS["lora"].example}, {"learning_rate": 1e-3})
    meta = write_export(tmp_path, config, info, {})
    adapter = json.loads((tmp_path / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == PACKAGED_MODEL_ID == meta["model"]
    assert meta["model_path"] == default_model()
    assert public_model_id("bert-base-uncased") == "bert-base-uncased"  # a hub id is its own
    assert public_model_id(str(tmp_path)) is None  # a folder of one's own has none
