"""A search over a seed method's space on the real path: growing ranks report what they reached, through Ray."""

from __future__ import annotations

import json

import pytest
from helpers import autopeft, tiny_search_args, trials_of

pytestmark = pytest.mark.slow


def test_a_growing_rank_search_stores_and_exports_the_ranks_each_trial_reached(tmp_path, tiny_model, data_dir):
    args = tiny_search_args(tiny_model, data_dir, tmp_path, "grow", 3, "--workers", "2", "--space", "incre_lora")
    done = autopeft(*args, "--sampler", "random", "--confirm", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    finished = [t for t in trials_of("grow", f"sqlite:///{tmp_path}/optuna.db") if t.state.name == "COMPLETE"]
    assert finished
    for trial in finished:
        ranks = trial.user_attrs["method_report"]["incre_lora_ranks"]  # decoded: Tune would have flattened it
        plan = trial.user_attrs["config"]["methods"]["incre_lora"]
        assert len(ranks) == len(plan["targets"]) and all(
            plan["init_rank"] <= r <= plan["max_rank"] for r in ranks.values()
        )
    out = tmp_path / "best"
    pick = str(finished[0].number)  # a trial: best may be the status quo (LoRA) on the tiny model
    exported = autopeft("export", "--runs-dir", str(tmp_path), "--study", "grow", "--pick", pick, "--out", str(out))
    assert exported.returncode == 0, exported.stderr[-2000:]
    document = json.loads((out / "autopeft.json").read_text())
    assert document["method_report"]["incre_lora_ranks"] == finished[0].user_attrs["method_report"]["incre_lora_ranks"]
