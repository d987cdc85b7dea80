import numpy as np
import pytest

from autopeft.errors import AutopeftError, DataError
from autopeft.tasks import METRICS, TASKS_DIR, builtin_tasks, compute_metrics, get_task

ROWS = {"rte": (2490, 277), "mrpc": (3668, 408), "cola": (8551, 1043), "sst2": (67349, 872), "stsb": (5749, 1500)}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_local_glue_splits_have_the_official_row_counts(name, data_dir):
    task = get_task(name)
    train, dev = task.load_split("train", data_dir), task.load_split("validation", data_dir)
    assert (len(train), len(dev)) == ROWS[name]
    assert len(train.texts) == len(task.text_fields)
    assert all(isinstance(t, str) and t for t in train.texts[0][:50])
    if task.is_regression:
        assert 0 <= train.labels.min() and train.labels.max() <= 5
    else:
        assert set(np.unique(train.labels)) == set(range(task.num_labels))


def test_rte_labels_map_in_glue_order(data_dir):
    dev = get_task("rte").load_split("validation", data_dir)
    assert dev.texts[0][0].startswith("Dana Reeve") and dev.labels[0] == 1  # not_entailment


@pytest.mark.parametrize(("alias", "name"), [("SST-2", "sst2"), ("STS-B", "stsb"), ("RTE", "rte")])
def test_task_names_are_case_and_dash_insensitive(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(
        AutopeftError, match="unknown task 'qqq'; built-in tasks: cola, mrpc, rte, sst2, stsb, or the path"
    ):
        get_task("qqq")


def test_builtin_tasks_are_the_shipped_task_files():
    assert builtin_tasks() == ["cola", "mrpc", "rte", "sst2", "stsb"]
    assert get_task("rte").source == TASKS_DIR / "rte.yaml"
    assert get_task(str(TASKS_DIR / "mrpc.yaml")).metrics == ("f1", "accuracy")


def test_missing_folder_and_split_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        get_task("rte").load_split("train", tmp_path / "nope")
    (tmp_path / "RTE").mkdir()
    with pytest.raises(DataError, match=r"rte.yaml: validation: file '.*RTE/dev.tsv' does not exist"):
        get_task("rte").load_split("validation", tmp_path)


def test_label_outside_the_task_labels_names_file_key_and_row(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n"
    )
    with pytest.raises(
        DataError, match=r"rte.yaml: labels: .*train.tsv row 2: label 'maybe' is not one of entailment, not_entailment"
    ):
        get_task("rte").load_split("train", tmp_path)


def test_metrics_match_reference_values():
    labels, preds = np.array([1, 0, 1, 1, 0, 0]), np.array([1, 0, 0, 1, 1, 0])
    got = compute_metrics(["accuracy", "f1", "mcc", "macro_f1"], preds, labels)
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["mcc"] == pytest.approx(1 / 3)
    assert got["macro_f1"] == pytest.approx(2 / 3)
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    assert METRICS["pearson"](scores, scores * 2 + 1) == pytest.approx(1.0)
    assert METRICS["spearman"](scores, np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(1.0)
    assert METRICS["pearson"](np.ones(4), scores) == 0.0
