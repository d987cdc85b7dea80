"""Every name autopeft stores is declared in :mod:`autopeft.keys`: a real search, ``retrain`` and ``baselines`` run,
then every study attribute, trial attribute, MLflow tag and parameter they wrote is collected and checked. A grep
would miss the names built from f-strings; this reads what was written."""

from __future__ import annotations

import optuna
import pytest
from helpers import autopeft, tiny_search_args
from mlflow.tracking import MlflowClient

from autopeft import keys

pytestmark = pytest.mark.slow

SCHEDULE = ["--epochs", "0.5", "--max-train-samples", "64"]


def stored_names(runs) -> dict[str, set[str]]:
    """kind -> every name stored under the runs folder (Optuna study and trial attributes, MLflow tags and
    parameters; MLflow's own ``mlflow.*`` tags left out)."""
    storage = f"sqlite:///{runs}/optuna.db"
    found: dict[str, set[str]] = {"study": set(), "trial": set(), "tag": set(), "param": set()}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        found["study"] |= set(study.user_attrs)
        for trial in study.get_trials(deepcopy=False):
            found["trial"] |= set(trial.user_attrs)
    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run in client.search_runs(experiments, max_results=5000):
        found["tag"] |= {t for t in run.data.tags if not t.startswith("mlflow.")}
        found["param"] |= set(run.data.params)
    return found


def test_everything_a_search_retrain_and_baselines_store_is_declared(tmp_path, tiny_model, data_dir):
    runs = tmp_path / "runs"
    search = tiny_search_args(tiny_model, data_dir, runs, "keys", 3, "--confirm", "1", "--sampler", "random")
    done = autopeft(*search)
    assert done.returncode == 0, done.stderr[-3000:]
    common = ["--runs-dir", str(runs), "--study", "keys", "--seeds", "1", *SCHEDULE]
    for command in (["retrain", "--pick", "knee", "best"], ["baselines", "--only", "lora"]):
        done = autopeft(*command, *common)
        assert done.returncode == 0, done.stderr[-3000:]

    found = stored_names(runs)
    undeclared = {kind: sorted(n for n in names if not keys.declared(kind, n)) for kind, names in found.items()}
    assert not any(undeclared.values()), f"stored but not declared in autopeft/keys.py: {undeclared}"
    # the collection saw each kind of store, the keys built from numbers and spec fields included
    assert any(n.startswith(keys.RETRAIN_PREFIX) for n in found["study"]), found["study"]
    assert any(n.startswith(keys.CONFIRM_PREFIX) for n in found["study"]), found["study"]
    assert {keys.SPEC, keys.SETTINGS, keys.BASELINES} <= found["study"]
    assert {keys.CONFIG, keys.RUNGS, keys.METRIC} <= found["trial"]
    assert {keys.TAG_ROLE, keys.TAG_PARETO, keys.TAG_SEED} <= found["tag"]
    assert any(n.startswith(keys.PARAM_SPEC) for n in found["param"])
    assert any(n.startswith(keys.PARAM_SPACE) for n in found["param"])


def test_an_undeclared_name_is_caught():
    assert not keys.declared("study", "autopeft.colour") and not keys.declared("trial", "colour")
    assert keys.declared("study", keys.CONFIRM_PREFIX + "12") and not keys.declared("study", keys.CONFIRM_PREFIX + "x")
