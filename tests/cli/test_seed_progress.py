"""Seeded commands (``retrain``, ``baselines``) off a terminal: one line per finished run, counting only the runs
the command trains, with the time left at the pace so far."""

from __future__ import annotations

import re

from autopeft.cli.training import SeedProgress

LINE = re.compile(
    r"^baselines: (\d+)/(\d+) runs done; lora seed (\d): accuracy [\d.]+ \(\d+ s\); [\d:]+ elapsed, about ([\d:]+) left$"
)


def test_off_a_terminal_each_run_prints_its_line_and_the_stored_runs_are_not_counted(capsys):
    with SeedProgress(6, "baselines", "accuracy") as progress:
        progress.stored(3)
        for seed in range(3):
            progress.run_ended("lora", {"seed": seed, "metric": 0.5 + seed / 10, "seconds": 4.0})
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("baselines: ")]
    found = [LINE.match(line) for line in lines]
    assert all(found), lines
    assert [(m[1], m[2], m[3]) for m in found] == [("1", "3", "0"), ("2", "3", "1"), ("3", "3", "2")]
    assert found[-1][4] == "0:00:00"


def test_a_failed_run_says_so_in_its_line(capsys):
    with SeedProgress(1, "retraining", "f1") as progress:
        progress.run_ended("trial 7", {"seed": 0, "fail_reason": "non-finite loss"})
    err = capsys.readouterr().err
    assert "retraining: 1/1 runs done; trial 7 seed 0: failed: non-finite loss;" in err
