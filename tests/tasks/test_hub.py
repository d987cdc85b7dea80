"""The hub path (no ``--data-dir``): a built-in task reads its hub dataset through ``datasets``. Offline here, from a
``datasets`` cache laid out as a download of ``nyu-mll/glue`` would leave it, built in the test from local files."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from helpers import autopeft

ROWS = 48


def glue_cache(cache: Path, data_dir: str) -> dict[str, str]:
    """A ``datasets`` cache holding ``nyu-mll/glue`` config ``rte`` (the first rows of each local split, labels as
    class ids as on the hub); the environment that reads only it."""
    import pyarrow as pa
    from datasets import Dataset, SplitDict, SplitInfo

    folder = cache / "nyu-mll___glue" / "rte" / "0.0.0" / "localbuild"
    folder.mkdir(parents=True)
    splits, info = SplitDict(), None
    for split, file in (("train", "train.tsv"), ("validation", "dev.tsv")):
        frame = pd.read_csv(Path(data_dir) / "RTE" / file, sep="\t", quoting=3).head(ROWS)
        frame["label"] = frame["label"].map(["entailment", "not_entailment"].index)
        table = Dataset.from_pandas(frame[["sentence1", "sentence2", "label"]], preserve_index=False)
        with (
            pa.OSFile(str(folder / f"glue-{split}.arrow"), "wb") as sink,
            pa.ipc.new_stream(sink, table.data.table.schema) as writer,
        ):
            writer.write_table(table.data.table)
        splits.add(SplitInfo(split, num_examples=len(frame)))
        info = table.info
    info.builder_name, info.config_name, info.dataset_name, info.splits = "glue", "rte", "glue", splits
    info.write_to_directory(str(folder))
    env = {k: v for k, v in os.environ.items() if k != "AUTOPEFT_DATA_DIR"}
    return {**env, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_a_builtin_task_reads_its_hub_dataset_without_a_data_folder(tmp_path, data_dir, monkeypatch):
    import datasets

    from autopeft.tasks import get_task

    for key, value in glue_cache(tmp_path / "cache", data_dir).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    task = get_task("rte")
    local, hub = task.load_split("validation", data_dir), task.load_split("validation", None)
    assert len(hub) == ROWS
    assert hub.texts[0] == local.texts[0][:ROWS] and hub.texts[1] == local.texts[1][:ROWS]
    assert hub.labels.tolist() == local.labels[:ROWS].tolist()


@pytest.mark.slow
def test_the_readme_search_runs_without_a_data_folder(tmp_path, data_dir, tiny_model):
    env = glue_cache(tmp_path / "cache", data_dir)
    done = autopeft(
        "search", "--task", "rte", "--budget", "2%", "--model", tiny_model, "--epochs", "0.5", "--max-eval-samples",
        "16", "--runs-dir", str(tmp_path / "runs"), "--study", "hub", "--trials", "2", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trials trained to the end" in done.stdout + done.stderr
