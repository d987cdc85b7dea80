"""Task files: every format, label mappings, and errors that name the file and the key."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import write_similarity_task

from autopeft.errors import ConfigError, DataError
from autopeft.tasks import get_task, task_reference
from autopeft.training.data import tokenized_split

BASE = "name: t\ntrain: train.{ext}\nvalidation: dev.{ext}\ntext_fields: [a, b]\nlabel_field: y\n"


def _write(folder, ext: str, rows: list[dict], body: str = "labels: [no, yes]\nmetric: accuracy\n", split="train"):
    path = folder / f"{split}.{ext}"
    frame = pd.DataFrame(rows)
    if ext == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif ext == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if ext == "tsv" else ",", index=False)
    task = folder / "task.yaml"
    task.write_text(BASE.format(ext=ext) + body)
    return task


ROWS = [{"a": 'one, "quoted"', "b": "two", "y": "yes"}, {"a": "three", "b": "four", "y": "no"}]


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_every_format_reads_the_same_examples(tmp_path, ext):
    task = get_task(str(_write(tmp_path, ext, ROWS)))
    data = task.load_split("train")
    assert data.texts == (['one, "quoted"', "three"], ["two", "four"])
    assert data.labels.tolist() == [1, 0]


def test_a_label_mapping_sends_several_raw_values_to_one_class(tmp_path):
    rows = [{"a": "x", "b": "y", "y": v} for v in (0, 1, 2, 1)]
    body = "labels: {0: entailment, 1: neutral, 2: contradiction}\nmetric: macro_f1\n"
    task = get_task(str(_write(tmp_path, "jsonl", rows, body)))
    assert task.class_names == ["entailment", "neutral", "contradiction"] and task.num_labels == 3
    assert task.load_split("train").labels.tolist() == [0, 1, 2, 1]
    merged = get_task(str(_write(tmp_path, "jsonl", rows, "labels: {0: same, 1: other, 2: other}\nmetric: mcc\n")))
    assert merged.num_labels == 2 and merged.load_split("train").labels.tolist() == [0, 1, 1, 1]


def test_regression_reads_float_labels(tmp_path):
    rows = [{"a": "x", "b": "y", "y": 0.5}, {"a": "x", "b": "y", "y": 4}]
    task = get_task(str(_write(tmp_path, "csv", rows, "type: regression\nmetric: spearman\n")))
    assert task.is_regression and task.num_labels == 1 and task.metrics == ("spearman",)
    assert task.load_split("train").labels.tolist() == [0.5, 4.0]


@pytest.mark.parametrize(
    ("rows", "body", "message"),
    [
        (
            [{"a": "x", "y": "yes"}],
            None,
            r"task.yaml: text_fields: column 'b' is missing in .*train.jsonl \(columns: a, y\)",
        ),
        ([{"a": "x", "b": "z", "label": "yes"}], None, r"task.yaml: label_field: column 'y' is missing"),
        (
            [{"a": "x", "b": "z", "y": "maybe"}],
            None,
            r"task.yaml: labels: .*train.jsonl row 1: label 'maybe' is not one of no, yes",
        ),
        (
            [{"a": None, "b": "z", "y": "yes"}],
            None,
            r"task.yaml: text_fields: .*train.jsonl row 1: column 'a' is empty \(null\)",
        ),
        ([], None, r"task.yaml: train: .*train.jsonl has no rows"),
        (
            ROWS,
            "labels: [no, yes]\nmetric: pearson\n",
            r"task.yaml: metric: 'pearson' does not apply to classification",
        ),
        (ROWS, "labels: [a, b, c]\nmetric: f1\n", r"task.yaml: metric: f1 is binary; use macro_f1"),
        (ROWS, "labels: [no, yes]\nmetric: accuracy\ncolour: red\n", r"task.yaml: colour: unknown key"),
        (ROWS, "metric: accuracy\n", r"task.yaml: labels: a classification task lists its labels"),
        (ROWS, "labels: [no, yes]\nmetric: top5\n", r"task.yaml: metric: unknown metric 'top5'"),
        (ROWS, "labels: [no, yes]\nmetric: accuracy\nformat: xml\n", r"task.yaml: format: Input should be"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, rows, body, message):
    args = (tmp_path, "jsonl", rows) if body is None else (tmp_path, "jsonl", rows, body)
    with pytest.raises((ConfigError, DataError), match=message):
        get_task(str(_write(*args))).load_split("train")


def test_missing_files_and_unknown_extensions_are_clear(tmp_path):
    task = _write(tmp_path, "jsonl", ROWS)
    with pytest.raises(DataError, match=r"task.yaml: validation: file '.*dev.jsonl' does not exist"):
        get_task(str(task)).load_split("validation")
    with pytest.raises(DataError, match=r"task.yaml: test: the task has no test split"):
        get_task(str(task)).load_split("test")
    (tmp_path / "train.txt").write_text("a\tb\ty\n")
    task.write_text(task.read_text().replace("train.jsonl", "train.txt"))
    with pytest.raises(DataError, match=r"task.yaml: format: cannot tell the format of train.txt"):
        get_task(str(task)).load_split("train")
    with pytest.raises(ConfigError, match=r"task file '.*nope.yaml' does not exist"):
        get_task(str(tmp_path / "nope.yaml"))


def test_task_files_resolve_relative_to_themselves(tmp_path, data_dir, monkeypatch):
    path = write_similarity_task(data_dir, tmp_path / "sim", train_rows=12, dev_rows=6)
    monkeypatch.chdir(tmp_path)
    assert task_reference("sim/similarity.yaml") == path
    task = get_task("sim/similarity.yaml")
    train = task.load_split("train")
    assert len(train) == 12 and set(np.unique(train.labels)) <= {0, 1, 2}
    assert task.metrics == ("macro_f1", "accuracy")


def test_the_tokenisation_cache_follows_the_files(tmp_path, tiny_model):
    task_path = _write(tmp_path, "jsonl", ROWS)
    _write(tmp_path, "jsonl", ROWS, split="dev")
    first = tokenized_split(get_task(str(task_path)), "train", tiny_model, 32, None, tmp_path / "cache")
    _write(tmp_path, "jsonl", [*ROWS, {"a": "five", "b": "six", "y": "yes"}])
    second = tokenized_split(get_task(str(task_path)), "train", tiny_model, 32, None, tmp_path / "cache")
    assert len(first["labels"]) == 2 and len(second["labels"]) == 3  # an edited file is not served stale
