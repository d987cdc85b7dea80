"""``autopeft status`` in text: a finished search's counts and time left, read from its store."""

from __future__ import annotations

import shutil

from conftest import REPO

from autopeft.cli import main

STORE = REPO / "bench" / "results" / "stores" / "full-fidelity" / "rte" / "optuna.db"


def test_a_finished_search_shows_its_counts_and_nothing_left(tmp_path, capsys):
    store = tmp_path / "optuna.db"
    shutil.copy(STORE, store)
    assert main(["status", "--study", "quality-rte", "--storage", f"sqlite:///{store}"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("quality-rte: 16/16 trials done (8 trained to the end, 8 stopped at a rung)"), first
    assert first.endswith("; 0:00:00 left"), first
