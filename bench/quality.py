"""Does the answer beat what a user would do instead? The default search against the baselines, at full fidelity.

Runs the user's own command sequence, in this process, through ``autopeft.cli.main``:

    autopeft search    --task T --budget 0.5% --study quality-T        (the defaults; selects on the selection split)
    autopeft retrain   --study quality-T --pick knee best --seeds 3    (3 epochs of the whole train split, validation)
    autopeft baselines --study quality-T --only lora,houlsby[,full]    (the same seeds and schedule)

then reads the stores and prints a table (configuration, trainable %, mean ± std of the validation
metric over the seeds, training seconds per run) and, last, one line::

    task=<t> knee_minus_lora=<points> best_minus_lora=<points> search_compute_in_lora_finetunes=<x>

Points are 100 x the difference of the mean validation metric. The compute ratio is the search's
training (every trial, stopped ones and confirmations included) over one LoRA r=8 full-fidelity
run's, counted in training tokens: trials train on one thread each and retrains on every core, and
two threads are not twice one (MRPC: LoRA 305 s on 2 threads, 450 s on one), so core-seconds would
overstate the LoRA run and understate the ratio (5.86 where tokens say 8.10); seconds per example
on one thread are the same for the proxy and full training (0.039 and 0.041 s on MRPC, fidelity
bench), so the tokens ratio is the one-thread seconds ratio, and no drift of this machine's speed
moves it. The core-seconds ratio is printed beside it. Every step resumes (the search
continues its study, ``retrain`` and ``baselines`` skip the seeds they hold), so an interrupted
run, or one spanning sessions, goes on where it stopped.

    python bench/quality.py --task mrpc --data-dir ../shared/data/glue
    python bench/quality.py --task rte --data-dir ../shared/data/glue --full   # also full fine-tuning
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autopeft import cli
from autopeft.baselines import baselines_study_name, stored_runs
from autopeft.pareto import confirmation_runs, learnt_margin, not_learnt_warning, pick_trial
from autopeft.results import retrain_runs
from autopeft.search import SEARCH_RUNS_ATTR
from autopeft.study import connect_storage, default_storage, spec_of
from autopeft.tasks import get_task
from autopeft.training import full_fidelity

_FULL = full_fidelity()
FULL_FIDELITY = [
    *("--epochs", f"{_FULL.epochs:g}", "--max-train-samples", "0", "--max-eval-samples", "0"),
    *("--batch-size", str(_FULL.batch_size)),
]
"""``full_fidelity()`` as options: the schedule of every retrain (its default) and baseline run."""


def _run(argv: list[str]) -> None:
    print("$ autopeft " + " ".join(argv), flush=True)
    code = cli.main(argv)
    if code:
        raise SystemExit(f"autopeft {argv[0]} exited with {code}")


def core_seconds(run: dict) -> float:
    """Training seconds x torch threads of one run (a trial's attributes, a confirmation or a retrain record)."""
    return float(run["train_seconds"]) * int(run.get("threads") or 1)


def search_compute(study: optuna.Study) -> tuple[float, float, int]:
    """Training core-seconds and tokens of every trial of a search, confirmations included, and how many runs.

    Args:
        study: the study.
    """
    runs = [t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))]
    runs += [run for runs in confirmation_runs(study).values() for run in runs if "values" in run]
    return sum(map(core_seconds, runs)), sum(float(r.get("train_tokens") or 0) for r in runs), len(runs)


def _summary(runs: list[dict]) -> tuple[float, float, float, float, int]:
    """mean, std of the metric; median core-seconds and tokens per run; seeds."""
    metrics = [r["metric"] for r in runs]
    std = statistics.stdev(metrics) if len(metrics) > 1 else 0.0
    seconds = statistics.median(map(core_seconds, runs))
    tokens = statistics.median(float(r.get("train_tokens") or 0) for r in runs)
    return statistics.fmean(metrics), std, seconds, tokens, len(runs)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--budget", default="0.5%")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"))
    parser.add_argument("--runs-dir", default="runs/quality")
    parser.add_argument("--full", action="store_true", help="also full fine-tuning (slow on CPUs)")
    parser.add_argument("--search-args", default="", help="further search options, e.g. '--trials 12' (smoke runs)")
    parser.add_argument("--retrain-args", default="", help="further retrain/baselines options (smoke runs)")
    parser.add_argument("--report", action="store_true", help="train nothing: the table of what the stores hold")
    args = parser.parse_args(argv)

    task = get_task(args.task)
    name = f"quality-{task.name}"
    common = ["--runs-dir", args.runs_dir] + (["--data-dir", args.data_dir] if args.data_dir else [])
    schedule = FULL_FIDELITY + args.retrain_args.split() + ["--seeds", str(args.seeds)]
    only = "lora,houlsby" + (",full" if args.full else "")
    if not args.report:
        search = ["search", "--task", args.task, "--budget", args.budget, "--study", name]
        _run([*search, *common, *args.search_args.split()])
        _run(["retrain", "--study", name, "--pick", "knee", "best", *common, *schedule])
        _run(["baselines", "--study", name, "--only", only, *common, *schedule])

    storage = default_storage(Path(args.runs_dir).resolve())
    study = optuna.load_study(study_name=name, storage=connect_storage(storage))
    spec = spec_of(study)
    picks = {"knee": pick_trial(study, "knee"), "best": pick_trial(study, "best")}
    try:
        base_runs = stored_runs(
            optuna.load_study(
                study_name=baselines_study_name(task.name, spec["model"], spec["budget"]),
                storage=connect_storage(storage),
            )
        )
    except KeyError:  # no baseline has run yet
        base_runs = []
    rows: dict[str, tuple] = {}
    for pick, trial in picks.items():
        runs = [r for r in retrain_runs(study, trial.number) if "metric" in r]
        if runs:
            label = f"autopeft {pick} (trial {trial.number})"
            done = [r for r in runs if r["settings"] == runs[-1]["settings"]]
            rows[pick] = (label, trial.user_attrs["trainable_fraction"], _summary(done))
    for baseline in only.split(","):
        runs = [t.user_attrs for t in base_runs if t.user_attrs.get("baseline") == baseline and t.values]
        if runs:
            runs = [r for r in runs if r["settings"] == runs[-1]["settings"]]
            rows[baseline] = (runs[-1]["label"], runs[-1]["trainable_fraction"], _summary(runs))
    pending = [name for name in [*picks, *only.split(",")] if name not in rows]

    search_seconds, search_tokens, search_runs = search_compute(study)
    schedule_text = f"{_FULL.epochs:g} epochs of the whole train split"
    print(f"\n{task.name}: validation {task.metric}, {args.seeds} seeds, {schedule_text}")
    print(f"| configuration | trainable % | {task.metric} (mean ± std) | training core-s per run | seeds |")
    print("|---|---|---|---|---|")
    for label, fraction, (mean, std, seconds, _, seeds) in rows.values():
        print(f"| {label} | {100 * fraction:.3f} | {mean:.4f} ± {std:.4f} | {seconds:.0f} | {seeds} |")
    search_record = next((r for r in study.user_attrs.get(SEARCH_RUNS_ATTR, []) if r["trials_run"]), {})
    if "seconds" in search_record:
        print(
            f"search: {search_runs} trainings (trials and confirmations), {search_seconds:.0f} training core-s; "
            f"wall {search_record['seconds'] / 60:.1f} min for {search_record['trials_run']} trials on "
            f"{search_record['workers']} workers, start-up estimate {search_record['estimate_seconds'] / 60:.1f} min "
            f"({100 * (search_record['estimate_seconds'] / search_record['seconds'] - 1):+.0f}%)"
        )
    margin = learnt_margin(study)
    if margin is not None:
        verdict = "learnt" if not_learnt_warning(study) is None else "not learnt: its ranking says little"
        print(f"search's best neg_loss above the label prior's: {100 * margin:.1f}% of its loss ({verdict})")
    if pending:
        print(f"not trained yet: {', '.join(pending)} (the run without --report trains them)")
    if any(name not in rows or rows[name][2][4] < args.seeds for name in ("knee", "best", "lora")):
        print(f"task={task.name}: no final line until knee, best and lora hold {args.seeds} seeds each")
        return ""
    lora_seconds, lora_tokens = rows["lora"][2][2], rows["lora"][2][3]
    print(f"search compute in LoRA fine-tunes by training core-seconds: {search_seconds / lora_seconds:.2f}")
    lora_mean = rows["lora"][2][0]
    line = (
        f"task={task.name} knee_minus_lora={100 * (rows['knee'][2][0] - lora_mean):.2f} "
        f"best_minus_lora={100 * (rows['best'][2][0] - lora_mean):.2f} "
        f"search_compute_in_lora_finetunes={search_tokens / lora_tokens:.2f}"
    )
    print(line)
    return line


if __name__ == "__main__":
    main(sys.argv[1:])
