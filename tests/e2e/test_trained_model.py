"""From a search to a served model: search → retrain --pick best knee → export --trained → predict → the registered
model served by a real ``mlflow models serve`` on 127.0.0.1, answering as ``predict`` does; and every trial, retrain
and baseline run names the data files it read (their digests are the files')."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from helpers import autopeft, free_port, tiny_search_args
from mlflow.tracking import MlflowClient

from autopeft import keys

pytestmark = pytest.mark.slow

STUDY = "served"
SCHEDULE = ["--epochs", "1", "--max-train-samples", "64"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_model, data_dir) -> Path:
    """A small study with its best and knee retrained (2 seeds, models kept and registered) and LoRA's baseline."""
    runs = tmp_path_factory.mktemp("served") / "runs"
    done = autopeft(*tiny_search_args(tiny_model, data_dir, runs, STUDY, 3, "--sampler", "random"))
    assert done.returncode == 0, done.stderr[-3000:]
    common = ["--runs-dir", str(runs), "--study", STUDY, *SCHEDULE]
    done = autopeft("retrain", *common, "--pick", "best", "knee", "--seeds", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "as @champion" in done.stderr and "as @knee" in done.stderr, done.stderr[-2000:]
    again = autopeft("retrain", *common, "--pick", "best", "knee", "--seeds", "2")  # nothing to train or register
    assert again.returncode == 0, again.stderr[-3000:]
    done = autopeft("baselines", *common, "--only", "lora", "--seeds", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    return runs


def rows(data_dir: str, n: int = 12) -> pd.DataFrame:
    frame = pd.read_csv(Path(data_dir) / "RTE" / "dev.tsv", sep="\t", quoting=3).head(n)
    return frame[["index", "sentence1", "sentence2"]]


def test_export_trained_then_predict_a_csv(searched, data_dir, tmp_path):
    out = tmp_path / "best"
    done = autopeft("export", "--runs-dir", str(searched), "--study", STUDY, "--pick", "best", "--trained", "--out",
                    str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "with the weights of seed" in done.stdout
    document = json.loads((out / "autopeft.json").read_text())
    assert document["trained"]["seed"] in (0, 1) and (out / "autopeft_model.safetensors").is_file()

    rows(data_dir).to_csv(tmp_path / "in.csv", index=False)
    done = autopeft("predict", "--model", str(out), "--input", str(tmp_path / "in.csv"), "--out",
                    str(tmp_path / "out.csv"), "--batch-size", "5")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answer = pd.read_csv(tmp_path / "out.csv")
    assert list(answer.columns) == ["index", "label", "p_entailment", "p_not_entailment"]
    assert answer["index"].tolist() == rows(data_dir)["index"].tolist()
    assert (answer[["p_entailment", "p_not_entailment"]].sum(axis=1) - 1).abs().max() < 1e-5
    assert set(answer["label"]) <= {"entailment", "not_entailment"}

    every = autopeft("export", "--runs-dir", str(searched), "--study", STUDY, "--pick", "knee", "--trained", "all",
                     "--out", str(tmp_path / "knee"))  # fmt: skip
    assert every.returncode == 0, every.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "knee").iterdir()) == ["seed-0", "seed-1"]


def test_predict_refuses_a_bad_file_in_one_line(searched, tmp_path):
    (tmp_path / "bad.csv").write_text("premise,other\nx,y\n")
    folder = next((searched / "models" / STUDY).iterdir())
    for path in (tmp_path / "bad.csv", tmp_path / "missing.parquet", tmp_path / "x.xlsx"):
        done = autopeft("predict", "--model", str(folder), "--input", str(path))
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_every_run_names_the_data_files_it_read(searched, data_dir):
    client = MlflowClient(f"sqlite:///{searched}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000)
    by_role: dict[str, list] = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get(keys.TAG_ROLE), []).append(run)
    files = {
        split: Path(data_dir) / "RTE" / f"{name}.tsv" for split, name in (("train", "train"), ("validation", "dev"))
    }
    digests = {split: hashlib.sha256(path.read_bytes()).hexdigest() for split, path in files.items()}
    (parent,) = [r for r in by_role["parent"] if r.data.tags[keys.TAG_STUDY] == STUDY]
    assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {"rte-train", "rte-selection"}
    for role, scored in (("trial", "train"), ("retrain", "validation"), ("baseline", "validation")):
        assert by_role.get(role), role
        for run in by_role[role]:
            inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
            assert set(inputs) == {"rte-train", f"rte-{'selection' if role == 'trial' else 'validation'}"}, inputs
            train = inputs["rte-train"].dataset
            assert train.digest == digests["train"][: len(train.digest)] and len(train.digest) >= 16
            assert json.loads(train.profile) == {"num_rows": 2490, "sha256": digests["train"]}
            evaluation = inputs[f"rte-{'selection' if role == 'trial' else 'validation'}"].dataset
            assert json.loads(evaluation.profile)["sha256"] == digests[scored]


def test_the_parent_describes_its_pareto_set_with_links_to_their_runs(searched):
    client = MlflowClient(f"sqlite:///{searched}/mlflow.db")
    experiment = client.get_experiment_by_name(STUDY)
    (parent,) = client.search_runs([experiment.experiment_id], f"tags.`{keys.TAG_ROLE}` = 'parent'")
    note = parent.data.tags[keys.TAG_NOTE]
    pareto = parent.data.tags[keys.TAG_PARETO_TRIALS].split(",")
    trials = client.search_runs([experiment.experiment_id], f"tags.`{keys.TAG_ROLE}` = 'trial'")
    linked = [run for run in trials if run.data.tags[keys.TAG_TRIAL] in pareto]
    assert linked and len(linked) == len(pareto)
    for run in linked:
        assert f"(#/experiments/{experiment.experiment_id}/runs/{run.info.run_id})" in note
        assert run.info.run_name.startswith(f"trial-{run.data.tags[keys.TAG_TRIAL]} 0.")  # the score in the name


def test_the_champion_is_served_by_mlflow_and_answers_as_predict_does(searched, data_dir, tmp_path):
    from autopeft.cli.ui import beside_interpreter

    uri = f"sqlite:///{searched}/mlflow.db"
    client = MlflowClient(uri)
    champion = client.get_model_version_by_alias(STUDY, "champion")
    knee = client.get_model_version_by_alias(STUDY, "knee")
    assert champion.run_id and knee.run_id
    versions = client.search_model_versions(f"name = '{STUDY}'")
    assert len(versions) == len({v.run_id for v in versions}) == len({champion.run_id, knee.run_id})  # once each
    source_run = client.get_run(champion.run_id)
    assert source_run.data.tags[keys.TAG_ROLE] == "retrain"
    # champion is what `best` answers: a trial, or the status quo's model when nothing beat it
    from autopeft.study import StudyView

    best = StudyView.load(STUDY, f"sqlite:///{searched}/optuna.db").pick("best")
    assert source_run.data.tags[keys.TAG_TRIAL] == champion.tags[keys.TAG_TRIAL] == str(best.key)
    assert "@champion" in champion.description and f"seed {champion.tags[keys.TAG_SEED]}" in champion.description
    if best.is_status_quo:
        assert best.verdict in champion.description

    # what predict answers with the same trained folder (the champion's seed, from its run's tags)
    trial, seed = source_run.data.tags[keys.TAG_TRIAL], source_run.data.tags[keys.TAG_SEED]
    label = f"trial-{trial}" if trial.isdigit() else trial
    folder = searched / "models" / STUDY / f"{label}-seed{seed}"
    rows(data_dir).to_csv(tmp_path / "in.csv", index=False)
    done = autopeft("predict", "--model", str(folder), "--input", str(tmp_path / "in.csv"))
    assert done.returncode == 0, done.stderr[-2000:]
    expected = pd.read_csv(__import__("io").StringIO(done.stdout))

    port = free_port()
    command = [beside_interpreter("mlflow"), "models", "serve", "-m", f"models:/{STUDY}@champion",
               "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 180 s"
                time.sleep(1)
        body = {"dataframe_split": rows(data_dir)[["sentence1", "sentence2"]].to_dict(orient="split")}
        body["dataframe_split"].pop("index")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = pd.DataFrame(json.loads(response.read())["predictions"])
    finally:
        server.terminate()
        server.wait(30)
    assert served["label"].tolist() == expected["label"].tolist()
    for column in ("p_entailment", "p_not_entailment"):
        assert (served[column] - expected[column]).abs().max() < 1e-5
