"""Configuration files of ``evaluate`` and ``export`` read numbers as space files do."""

from __future__ import annotations

import pytest

from autopeft.errors import ConfigError
from autopeft.export import read_config


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
