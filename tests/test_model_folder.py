"""Trained folders: weights in safetensors that peft and autopeft.load restore to the same logits, through the
production path too (a training's own predictions against the folder's)."""

from __future__ import annotations

import json

import pytest
import torch

from autopeft.methods.build import apply_config, check_config
from autopeft.methods.config import TrialConfig
from autopeft.model_folder import PEFT_WEIGHTS_FILE, WEIGHTS_FILE, save_trained
from autopeft.models import load_model
from autopeft.training.proxy import save_masks

LORA = {"targets": [[0, "query", 4], [1, "value", 4], [2, "ffn_out", 2]], "alpha": 16.0, "dropout": 0.0}
ADAPTER_AND_PRUNING = {
    "serial_adapter": {"targets": [[0, "attn", 4], [2, "ffn", 8]], "activation": "gelu", "residual": True},
    "pruning": {"target": 0.5, "granularity": "unstructured", "schedule": "one_shot", "layers": [0, 1],
                "modules": ["ffn_in"]},
}  # fmt: skip


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (6, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[:3, 8:] = 0  # padding too
    return {"input_ids": ids, "attention_mask": mask}


def trained(tiny_model, tiny_info, methods: dict, steps: int = 6):
    """A configuration applied to the tiny model and trained a few steps (its hooks driven as training drives them)."""
    torch.manual_seed(0)
    config = check_config(TrialConfig(methods, {"learning_rate": 5e-2}), tiny_info)
    adapted = apply_config(load_model(tiny_model, 2), config, tiny_info, steps)
    optimizer = adapted.optimizer(5e-2)
    for hook in adapted.hooks:
        hook.on_train_begin()
    adapted.model.train()
    for step in range(1, steps + 1):
        loss = adapted.model(**batch(step), labels=torch.tensor([0, 1, 0, 1, 1, 0])).loss
        loss.backward()
        optimizer.step()
        for hook in adapted.hooks:
            hook.after_step(step)
        optimizer.zero_grad()
    adapted.model.eval()
    return adapted


def logits(model, seed: int = 99) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch(seed)).logits


def record() -> dict:
    return {"task": "rte", "label_names": ["entailment", "not_entailment"], "text_fields": ["sentence1", "sentence2"]}


def test_a_trained_lora_folder_loads_in_peft_and_in_autopeft_with_the_same_logits(tmp_path, tiny_model, tiny_info):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    import autopeft

    adapted = trained(tiny_model, tiny_info, {"lora": LORA})
    b_weights = [p for n, p in adapted.model.named_parameters() if "lora_B" in n]
    assert b_weights and all(p.abs().sum() > 0 for p in b_weights)  # trained: an untrained round trip cannot pass
    summary = save_trained(tmp_path / "m", adapted, tiny_info, record(), 6, None, load_model(tiny_model, 2))
    assert summary["peft_expressible"] and summary["peft_weights"] is True
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {WEIGHTS_FILE, PEFT_WEIGHTS_FILE, "adapter_config.json"}
    assert not list((tmp_path / "m").glob("*.bin")) and not list((tmp_path / "m").glob("*.pt"))  # nothing pickled

    expected = logits(adapted.model)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    assert not torch.allclose(logits(base), expected, atol=1e-3)  # the head is fresh until peft restores it
    via_peft = PeftModel.from_pretrained(base, str(tmp_path / "m"))
    assert torch.allclose(logits(via_peft), expected, atol=1e-5)
    assert torch.allclose(logits(autopeft.load(tmp_path / "m").model), expected, atol=1e-5)


def test_an_adapter_and_pruning_folder_loads_with_autopeft_to_the_same_logits_and_sparsity(
    tmp_path, tiny_model, tiny_info
):
    import autopeft

    adapted = trained(tiny_model, tiny_info, ADAPTER_AND_PRUNING)
    assert adapted.sparsity() > 0.05
    save_masks(str(tmp_path / "masks.npz"), adapted.masks())
    summary = save_trained(
        tmp_path / "m", adapted, tiny_info, record(), 6, str(tmp_path / "masks.npz"), load_model(tiny_model, 2)
    )
    assert not summary["peft_expressible"] and "peft_weights" not in summary
    loaded = autopeft.load(tmp_path / "m")
    assert torch.allclose(logits(loaded.model), logits(adapted.model), atol=1e-5)
    assert loaded.sparsity() == pytest.approx(adapted.sparsity())


def test_a_folder_whose_weights_do_not_fit_its_configuration_is_refused(tmp_path, tiny_model, tiny_info):
    import autopeft
    from autopeft.errors import ConfigError

    adapted = trained(tiny_model, tiny_info, {"lora": LORA}, steps=1)
    save_trained(tmp_path / "m", adapted, tiny_info, record(), 1, None, None)
    document = json.loads((tmp_path / "m" / "autopeft.json").read_text())
    document["config"]["methods"]["lora"]["targets"] = [[0, "query", 4]]
    (tmp_path / "m" / "autopeft.json").write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="do not fit"):
        autopeft.load(tmp_path / "m")


def test_a_training_keeps_a_folder_that_predicts_what_the_training_scored(tmp_path, tiny_model, data_dir):
    """The production path: run_proxy_trial keeps the model; the folder's predictions on the validation rows equal the
    training's own (its probabilities, kept to 6 decimals)."""
    import numpy as np
    import pandas as pd

    from autopeft.inference import Predictor
    from autopeft.tasks import get_task
    from autopeft.training import ProxyRequest, ProxySettings, run_proxy_trial

    settings = ProxySettings(epochs=1, max_train_samples=48, max_eval_samples=24, batch_size=8, max_length=64)
    config = {"methods": {"lora": LORA}, "training": {"learning_rate": 5e-3}}
    request = ProxyRequest(
        tiny_model, "rte", data_dir, config, settings, seed=3, predictions=True, model_dir=str(tmp_path / "m"),
        provenance={"study": "s", "trial": 7},
    )  # fmt: skip
    result = run_proxy_trial(request)
    document = json.loads((tmp_path / "m" / "autopeft.json").read_text())
    assert document["trained"]["seed"] == 3 and document["trained"]["trial"] == 7
    assert document["trained"]["metric"] == result["metric"]
    task = get_task("rte")
    texts = task.load_split("validation", data_dir).texts
    rows = pd.DataFrame({f: column[:24] for f, column in zip(task.text_fields, texts, strict=True)})
    answer = Predictor(tmp_path / "m").predict(rows)
    probabilities = np.asarray(result["predictions"]["probabilities"])
    assert np.allclose(answer[["p_entailment", "p_not_entailment"]].to_numpy(), probabilities, atol=1e-5)
    assert answer["label"].tolist() == [task.class_names[k] for k in result["predictions"]["predicted"]]


def peft_expressible_methods() -> list[str]:
    import autopeft.methods  # noqa: F401  (registers the built-in methods)
    from autopeft.methods.base import METHODS
    from autopeft.models import backbone_info, default_model

    info = backbone_info(default_model(), 2)
    return [name for name, m in METHODS.items() if m.peft_config(m.example, info) is not None]


@pytest.mark.parametrize("method", peft_expressible_methods())
def test_every_peft_expressible_method_either_loads_in_peft_to_the_same_logits_or_says_why_not(
    method, tmp_path, tiny_model, tiny_info
):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from autopeft.methods.base import METHODS

    adapted = trained(tiny_model, tiny_info, {method: METHODS[method].example}, steps=3)
    summary = save_trained(tmp_path / "m", adapted, tiny_info, record(), 3, None, load_model(tiny_model, 2))
    if not summary["peft_weights"]:
        assert any("adapter_model.safetensors" in reason for reason in summary["not_expressible"])
        assert not (tmp_path / "m" / PEFT_WEIGHTS_FILE).exists()
        return
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    via_peft = PeftModel.from_pretrained(base, str(tmp_path / "m"))
    assert torch.allclose(logits(via_peft), logits(adapted.model), atol=1e-5)
