"""A search never touches validation labels: a task without its validation file is searched; retrain then says why it cannot run."""

from __future__ import annotations

import optuna
import pytest
from helpers import autopeft, write_similarity_task

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("broken", ["missing", "labels outside the task's set"])
def test_a_task_without_a_usable_validation_split_is_searched_and_retrain_says_it_needs_one(
    broken, tmp_path, tiny_model, data_dir
):
    task = write_similarity_task(data_dir, tmp_path / "sim")
    dev = tmp_path / "sim" / "data" / "dev.jsonl"
    if broken == "missing":
        dev.unlink()
    else:
        dev.write_text(dev.read_text().replace('"label": "same"', '"label": "unheard-of"'))
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs), "--study", "sim"]
    done = autopeft(
        "search", "--task", task, "--budget", "5%", "--model", tiny_model, "--epochs", "1", "--max-train-samples",
        "32", *common, "--trials", "2", "--workers", "1", "--sampler", "random",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="sim", storage=f"sqlite:///{runs}/optuna.db")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2 and {t.user_attrs["scored_on"] for t in complete} == {"selection"}
    again = autopeft("retrain", *common, "--pick", "best", "--seeds", "1", "--epochs", "1")
    lines = again.stderr.strip().splitlines()
    if broken == "missing":
        assert again.returncode == 2 and len(lines) == 1 and "retrain needs a validation split" in lines[0], lines
    else:
        assert again.returncode == 2 and len(lines) == 1 and "unheard-of" in lines[0], lines
