"""The quality benchmark runs the user's command sequence; a tiny run must print its table and final line."""

from __future__ import annotations

import importlib.util
import re
import statistics
import subprocess
import sys

import optuna
import pytest
from conftest import REPO

from autopeft.baselines import baselines_study_name, stored_runs
from autopeft.study import spec_of

pytestmark = pytest.mark.slow


def load_bench():
    spec = importlib.util.spec_from_file_location("quality", REPO / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(argv: list[str]) -> tuple[str, str]:
    """The bench as a user runs it, in its own process (its search starts a Ray cluster of its own)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "quality.py"), *argv], capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1], done.stdout


def test_a_tiny_quality_run_compares_the_picks_with_lora_on_the_same_seeds(tmp_path, tiny_model, data_dir):
    bench = load_bench()
    runs = tmp_path / "runs"
    search = f"--model {tiny_model} --trials 4 --epochs 0.5 --max-train-samples 64 --max-eval-samples 64"
    argv = ["--task", "rte", "--budget", "2%", "--seeds", "2", "--data-dir", data_dir, "--runs-dir", str(runs)]
    argv += ["--search-args", search, "--retrain-args", "--epochs 0.25 --max-train-samples 64"]
    line, out = run_bench(argv)
    assert re.fullmatch(
        r"task=rte knee_minus_lora=-?\d+\.\d\d best_minus_lora=-?\d+\.\d\d search_compute_in_lora_finetunes=\d+\.\d\d",
        line,
    ), line
    rows = [r for r in out.splitlines() if r.startswith("| ")]
    assert len(rows) == 1 + 4 and rows[-1].endswith("| 2 |"), out  # header; knee, best, lora, houlsby
    assert "start-up estimate" in out

    # the compute ratio counts every trial and confirmation of the study, as stored
    storage = f"sqlite:///{runs.resolve()}/optuna.db"
    study = optuna.load_study(study_name="quality-rte", storage=storage)
    seconds, tokens, count = bench.search_compute(study)
    confirmations = sum(len(v) for k, v in study.user_attrs.items() if k.startswith("autopeft.confirm."))
    assert count == 4 + confirmations and confirmations >= 1 and seconds > 0 and tokens > 0
    spec = spec_of(study)
    base = optuna.load_study(study_name=baselines_study_name("rte", spec["model"], spec["budget"]), storage=storage)
    lora = [t.user_attrs["train_tokens"] for t in stored_runs(base) if t.user_attrs.get("baseline") == "lora"]
    assert line.endswith(f"search_compute_in_lora_finetunes={tokens / statistics.median(lora):.2f}")  # in tokens

    again, _ = run_bench(argv)  # everything is stored: nothing trains again, the figures repeat
    assert again == line
    reported, _ = run_bench([*argv, "--report"])  # the stores alone give the same table and line
    assert reported == line
