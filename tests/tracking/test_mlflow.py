"""A new local tracking store is a copy of a migrated template: the same schema as MLflow's own, in less time."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from mlflow.tracking import MlflowClient

from autopeft.tracking.mlflow import Tracker, empty_store_template


def schema(path) -> dict[str, object]:
    """The store's migration and, per table, its columns (name, type, not null, primary key) and indexes."""
    with sqlite3.connect(path) as db:
        found: dict[str, object] = {"version": db.execute("SELECT version_num FROM alembic_version").fetchall()}
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
            columns = [(c[1], c[2].upper(), c[3], c[5]) for c in db.execute(f'PRAGMA table_info("{table}")')]
            indexes = sorted(i[1] for i in db.execute(f'PRAGMA index_list("{table}")') if i[3] != "pk")
            found[table] = (columns, indexes)
    return found


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPEFT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_store_made_from_the_template_has_mlflows_own_schema_and_its_default_experiment_in_the_runs_folder(
    tmp_path, cache
):
    runs = tmp_path / "runs"
    tracker = Tracker(f"sqlite:///{runs}/mlflow.db", "study", runs / "mlartifacts", {"a": 1})
    assert tracker.enabled and (cache / "mlflow").is_dir()
    assert not list((cache / "mlflow").glob(".*")) and not list(runs.glob(".mlflow.db.*"))  # no partial file left
    MlflowClient(f"sqlite:///{tmp_path}/by-mlflow.db").search_experiments()  # MLflow's own migrations
    copied, migrated = schema(runs / "mlflow.db"), schema(tmp_path / "by-mlflow.db")
    assert copied.keys() == migrated.keys()
    assert [t for t in copied if copied[t] != migrated[t]] == []
    default = MlflowClient(f"sqlite:///{runs}/mlflow.db").get_experiment("0")
    assert default.artifact_location == (runs / "mlartifacts" / "0").resolve().as_uri()
    second = tmp_path / "second"
    again = Tracker(f"sqlite:///{second}/mlflow.db", "study", second / "mlartifacts", {"a": 1})
    assert again.enabled and len(list((cache / "mlflow").iterdir())) == 1  # made once, copied twice
    assert again.experiment_id == tracker.experiment_id and again.parent_id != tracker.parent_id


def test_without_a_writable_cache_mlflow_creates_the_store_and_says_so(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("AUTOPEFT_CACHE_DIR", str(blocked / "cache"))
    runs = tmp_path / "runs"
    with caplog.at_level(logging.WARNING, logger="autopeft.tracking.mlflow"):
        tracker = Tracker(f"sqlite:///{runs}/mlflow.db", "study", runs / "mlartifacts", {})
    assert tracker.enabled
    assert [r.getMessage() for r in caplog.records if "template unavailable" in r.getMessage()]
    assert MlflowClient(f"sqlite:///{runs}/mlflow.db").get_experiment_by_name("study") is not None


def test_the_template_is_made_once_per_mlflow_version(cache):
    first = empty_store_template()
    made = first.stat().st_mtime_ns
    assert empty_store_template() == first and first.stat().st_mtime_ns == made
    assert first.name.startswith("empty-") and first.suffix == ".db"
