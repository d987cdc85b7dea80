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

from autopeft import keys
from autopeft.baselines import baselines_study_name, stored_runs
from autopeft.study import StudyView

STORES = REPO / "bench" / "results" / "stores" / "full-fidelity"


def load_bench():
    spec = importlib.util.spec_from_file_location("quality", REPO / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run_bench(argv: list[str]) -> tuple[str, str]:
    """The bench as a user runs it, in its own process (its search starts a Ray cluster of its own)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "quality.py"), *argv], capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1], done.stdout


@pytest.mark.slow
def test_a_tiny_quality_run_compares_the_picks_with_lora_on_the_same_seeds(tmp_path, tiny_model, data_dir):
    bench = load_bench()
    root = tmp_path / "runs"
    search = f"--model {tiny_model} --trials 4 --epochs 1 --max-train-samples 128 --max-eval-samples 64"
    argv = ["--task", "rte", "--budget", "2%", "--seeds", "2", "--data-dir", data_dir, "--runs-root", str(root)]
    argv += ["--search-args", search, "--retrain-args", "--epochs 0.25 --max-train-samples 64"]
    line, out = run_bench(argv)
    number = r"-?\d+\.\d\d"
    assert re.fullmatch(
        rf"task=rte knee_minus_lora={number} best_minus_lora={number} best_ci90={number},{number} "
        rf"knee_ci90={number},{number} search_compute_in_lora_finetunes=\d+\.\d\d best_is_status_quo=(yes|no)",
        line,
    ), line
    rows = [r for r in out.splitlines() if r.startswith("| ")]
    assert len(rows) == 1 + 4 and rows[-1].endswith("| 2 |"), out  # header; knee, best, lora, houlsby
    assert "start-up estimate" in out

    # the compute ratio counts every trial at every rung, the status quo and the confirmations, as stored
    storage = f"sqlite:///{(root / 'rte').resolve()}/optuna.db"
    view = StudyView.load("quality-rte", storage)
    seconds, tokens, count = bench.search_compute(view)
    confirmations = sum(len(v) for k, v in view.attrs.items() if k.startswith(keys.CONFIRM_PREFIX))
    assert count == 4 + 1 + confirmations and confirmations >= 1 and seconds > 0 and tokens > 0
    what = view.spec.what
    base = optuna.load_study(study_name=baselines_study_name("rte", what.model, what.budget), storage=storage)
    lora = [t.user_attrs for t in stored_runs(base) if t.user_attrs.get("baseline") == "lora"]
    assert (
        line.split()[-2]
        == f"search_compute_in_lora_finetunes={tokens / statistics.median(r['train_tokens'] for r in lora):.2f}"
    )
    assert all(run["predictions"]["rows"] == 277 for run in lora)  # RTE's validation split, one row per example

    again, _ = run_bench(argv)  # it may confirm a pick the first run's confirmations left on one seed
    settled, _ = run_bench(argv)  # everything is stored now: nothing trains again, the figures repeat
    assert settled == again
    reported, _ = run_bench([*argv, "--report"])  # the stores alone give the same table and line
    assert reported == again
    summary, _ = run_bench(["--summary", "rte", "--seeds", "2", "--runs-root", str(root)])
    assert re.fullmatch(
        rf"tasks=1 mean_best_minus_lora={number} worst_best_minus_lora={number} mean_knee_minus_lora={number} "
        rf"knee_params_vs_lora=\d+\.\d\d max_search_compute_in_lora_finetunes=\d+\.\d\d",
        summary,
    ), summary


def test_the_paired_interval_resamples_examples_and_compares_the_means_over_seeds(tmp_path):
    """Two configurations scored on the same examples: A right on 60 of 100 where B is right on 50 (A's seeds agree),
    so the difference is 10 points and its interval lies around it, inside [-100, 100]."""
    import hashlib

    import pandas as pd

    bench = load_bench()
    labels = [i % 2 for i in range(100)]

    def run(right: int, seed: int) -> dict:
        predicted = [label if i < right else 1 - label for i, label in enumerate(labels)]
        path = tmp_path / f"{right}-{seed}.csv"
        pd.DataFrame({"example": range(100), "label": labels, "predicted": predicted}).to_csv(path, index=False)
        return {
            "seed": seed,
            "predictions": {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
        }

    low, high = bench.paired_interval([run(60, 0), run(60, 1)], [run(50, 0), run(50, 1)], "accuracy")
    assert low < 10 < high and -100 <= low and high <= 100 and high - low < 25
    tampered = run(60, 2)
    tampered["predictions"]["sha256"] = "0" * 64
    with pytest.raises(SystemExit, match="digest differs"):
        bench.paired_interval([tampered], [run(50, 0)], "accuracy")


@pytest.mark.parametrize("name", ["mrpc", "rte"])
def test_the_committed_stores_of_earlier_turns_still_report(tmp_path, name):
    """Stores written by earlier versions (a flat spec, ``evaluated_on``, no predictions) are read as they are."""
    import shutil

    (tmp_path / name).mkdir()
    shutil.copyfile(REPO / "bench" / "results" / "stores" / f"quality-{name}-optuna.db", tmp_path / name / "optuna.db")
    line, out = run_bench(["--report", "--task", name, "--runs-root", str(tmp_path)])
    assert line.startswith(f"task={name} knee_minus_lora=") and "best_ci90=n/a" in line, out
    assert "| autopeft knee (trial" in out


def test_an_arm_in_another_runs_root_shares_the_baselines_it_copies(tmp_path):
    """``--baselines-from``: the baselines study and its per-example predictions come across once, and read back the
    same, digests included; a missing source is one line."""
    import shutil

    bench = load_bench()
    source = tmp_path / "quality" / "mrpc"
    shutil.copytree(REPO / "bench" / "results" / "stores" / "full-fidelity" / "mrpc", source)
    origin = f"sqlite:///{source}/optuna.db"
    view = StudyView.load("quality-mrpc", origin)
    arm = tmp_path / "arm" / "mrpc"
    arm.mkdir(parents=True)
    bench.share_baselines(view, str(arm), str(source))
    bench.share_baselines(view, str(arm), str(source))  # held already: nothing is copied twice
    copied, original = bench.baseline_runs(view, f"sqlite:///{arm}/optuna.db"), bench.baseline_runs(view, origin)
    assert [r.user_attrs for r in copied] == [r.user_attrs for r in original] and len(copied) == 6
    for run in copied:
        assert bench.read_predictions(run.user_attrs, arm).equals(bench.read_predictions(run.user_attrs, source))
    with pytest.raises(SystemExit, match="holds no study store"):
        bench.share_baselines(view, str(arm), str(tmp_path / "nowhere" / "mrpc"))


def test_the_front_hypervolume_is_the_area_above_the_reference_and_below_the_budget():
    """One point above the reference: (its metric − the reference) × (1 − its share of the budget), in points; none:
    zero; a lower reference only adds."""
    bench = load_bench()
    view = StudyView.load("quality-mrpc", f"sqlite:///{STORES / 'mrpc' / 'optuna.db'}")
    (_, (metric, fraction), _), (_, (second, _), _) = view.pareto[:2]
    limit = 0.005
    reference = (metric + second) / 2  # only the top point lies above it
    alone = bench.front_hypervolume(view, reference, limit)
    assert alone == pytest.approx(100 * (metric - reference) * (1 - fraction / limit))
    assert bench.front_hypervolume(view, metric + 0.01, limit) == 0.0
    assert bench.front_hypervolume(view, second - 0.01, limit) > alone


def test_two_searches_that_differ_in_their_sampler_compare_on_their_picks(tmp_path):
    """``--compare``: the knees' difference is the difference of what each run's own report says against the same
    LoRA runs, inside its paired interval; runs of two search seeds or two tasks are refused."""
    import shutil

    bench = load_bench()
    shutil.copytree(STORES / "mrpc", tmp_path / "mrpc")
    line = bench.compare(["mrpc", "mrpc-random"], str(tmp_path), 3, "lora,houlsby")
    found = dict(part.split("=") for part in line.split())
    knees = [
        bench.report(name, str(tmp_path / "mrpc"), 3, "lora,houlsby")["knee_minus_lora"]
        for name in found["compare"].split(",")
    ]
    assert float(found["knee_difference"]) == pytest.approx(knees[0] - knees[1], abs=0.01)
    low, high = map(float, found["knee_difference_ci90"].split(","))
    assert low <= float(found["knee_difference"]) <= high
    assert float(found["hypervolume_ratio"]) > 0 and float(found["compute_ratio"]) > 0
    with pytest.raises(SystemExit, match="different search seeds"):
        bench.compare(["mrpc", "mrpc-seed1"], str(tmp_path), 3, "lora,houlsby")
    with pytest.raises(SystemExit, match="two runs of one task"):
        bench.compare(["mrpc", "cola"], str(tmp_path), 3, "lora,houlsby")
