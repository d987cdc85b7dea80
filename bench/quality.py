"""Does the answer beat what a user would do instead? The default search against LoRA r=8, at full fidelity.

Runs the user's own command sequence, in this process, through ``autopeft.cli.main``:

    autopeft search    --task T --budget 0.5% --study quality-T        (the defaults: successive halving up to
                                                                        full fidelity, the status quo beside it)
    autopeft retrain   --study quality-T --pick knee best --seeds 3    (3 epochs of the whole train split, validation)
    autopeft baselines --study quality-T --only lora,houlsby[,full]    (the same seeds and schedule)

then reads the stores and prints a table (configuration, trainable %, mean ± std of the validation metric over
the seeds, training seconds per run) and, last, one line::

    task=<t> knee_minus_lora=<points> best_minus_lora=<points> best_ci90=<lo>,<hi> knee_ci90=<lo>,<hi>
        search_compute_in_lora_finetunes=<x> best_is_status_quo=<yes|no>

Points are 100 x the difference of the mean validation metric. The intervals are paired bootstrap 90%
intervals over the validation examples (``scipy.stats.bootstrap``, ``paired=True``, 2,000 resamples,
percentile): each resample draws examples, computes each seed's metric of both configurations on them from
the runs' stored per-example predictions, and takes the difference of the means over the seeds, the figure
the table reports. When ``best`` is the status quo (nothing beat it on the selection split) and the status
quo is LoRA r=8 itself, its row is LoRA's runs (the same configuration, seeds and schedule).

The compute ratio is the search's training (every trial at every rung, the status quo, the confirmations)
over one LoRA r=8 full-fidelity run's, counted in training tokens: trials train on one thread each and
retrains on every core, and two threads are not twice one, so core-seconds would mislead; seconds per
example on one thread are the same for a search's trial and a retrain, so the tokens ratio is the one-thread
seconds ratio, and no drift of this machine's speed moves it. Every step resumes (the search continues its
study, ``retrain`` and ``baselines`` skip the seeds they hold), so a run spanning sessions goes on.

    python bench/quality.py --task mrpc --data-dir ../shared/data/glue
    python bench/quality.py --task mrpc --name mrpc-seed1 --search-args "--seed 1" --data-dir ../shared/data/glue
    python bench/quality.py --task mrpc --name mrpc-random --search-args "--sampler random" --data-dir ...
    python bench/quality.py --task mrpc --name mrpc-upper --search-args "--start-load 0.5" --data-dir ...
                            # the design change: the quasi-random start fills at least half the budget
    python bench/quality.py --task mrpc --name mrpc-space --data-dir ...
                            # the second: the default space's learning rate at 1e-4..2e-3 (since a307faf;
                            # the committed `mrpc` run searched the old 5e-4..1e-2)
    python bench/quality.py --task mrpc --name mrpc-axes --runs-root runs/axes --baselines-from runs/quality ...
                            # an arm pinned to other code, in its own runs root, with the LoRA runs copied
    python bench/quality.py --summary mrpc,cola,stsb,rte,mrpc-seed1   # train nothing: every table, the last line
    python bench/quality.py --compare mrpc,mrpc-random   # train nothing: what the optimiser adds (below)

Each task has one runs folder (``<runs-root>/<task>``): its runs share the baselines' trainings
(``--baselines-from`` copies them from another runs root).

The summary's last line is over the named runs, one figure per task (the mean over that task's search seeds):
``tasks=<n> mean_best_minus_lora=<points> worst_best_minus_lora=<points> mean_knee_minus_lora=<points>
knee_params_vs_lora=<ratio> max_search_compute_in_lora_finetunes=<x>``, then how many of the searches
answered with the status quo.

``--compare A,B`` sets two runs of one task and search seed side by side (the same selection split, status quo
and LoRA runs; they differ in one option, the sampler): trials trained to the end, compute, the best trial's
selection metric, the hypervolume of the Pareto set on the selection split (``botorch``'s ``Hypervolume``, in
metric points x shares of the budget, above the lowest metric of either Pareto set), the
picks' validation figures, and one line::

    compare=<A>,<B> knee_difference=<points> knee_difference_ci90=<lo>,<hi> hypervolume_ratio=<A/B>
        compute_ratio=<A/B>

where the interval is the paired bootstrap above, between A's knee and B's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from autopeft import cli, keys
from autopeft.baselines import baselines_study_name, stored_runs
from autopeft.budget import parse_budget
from autopeft.runs_dir import RunsDir
from autopeft.study import StudyView, connect_storage
from autopeft.tasks import get_task
from autopeft.tasks.metrics import compute_metrics
from autopeft.training import full_fidelity

_FULL = full_fidelity()
FULL_FIDELITY = [
    *("--epochs", f"{_FULL.epochs:g}", "--max-train-samples", "0", "--max-eval-samples", "0"),
    *("--batch-size", str(_FULL.batch_size)),
]
"""``full_fidelity()`` as options: the schedule of every retrain (its default) and baseline run."""
RESAMPLES = 2000
CONFIDENCE = 0.9


def _run(argv: list[str]) -> None:
    print("$ autopeft " + " ".join(argv), flush=True)
    code = cli.main(argv)
    if code:
        raise SystemExit(f"autopeft {argv[0]} exited with {code}")


def core_seconds(run: dict) -> float:
    """Training seconds x torch threads of one run (a trial's attributes, a confirmation or a retrain record)."""
    return float(run["train_seconds"]) * int(run.get("threads") or 1)


def trained_by_part(view: StudyView) -> dict[str, list[dict]]:
    """Everything a search trained, by part: the trials trained to the end, the trials stopped at a rung (each
    with all it trained before the stop), the status quo, the confirmations.

    Args:
        view: the study.
    """
    quo = view.status_quo
    return {
        "trials to the end": [t.user_attrs for t in view.states(TrialState.COMPLETE)],
        "trials stopped at a rung": [t.user_attrs for t in view.states(TrialState.PRUNED)],
        "the status quo": [quo.user_attrs] if quo is not None else [],
        "confirmations": [run for runs in view.confirmations.values() for run in runs if "values" in run],
    }


def tokens(runs: list[dict]) -> float:
    """Training tokens of runs."""
    return sum(float(r.get("train_tokens") or 0) for r in runs)


def search_compute(view: StudyView) -> tuple[float, float, int]:
    """Training core-seconds and tokens of everything a search trained, and how many trainings: every trial
    at every rung (stopped ones too), the status quo, the confirmations.

    Args:
        view: the study.
    """
    runs = [run for part in trained_by_part(view).values() for run in part]
    return sum(map(core_seconds, runs)), tokens(runs), len(runs)


@dataclass
class Row:
    """One configuration's retrained runs.

    Attributes:
        label: how the table names it.
        fraction: its trainable fraction of the backbone.
        runs: its runs at the bench's settings, one per seed.
    """

    label: str
    fraction: float
    runs: list[dict] = field(default_factory=list)

    @property
    def metrics(self) -> list[float]:
        return [r["metric"] for r in self.runs]

    def summary(self) -> tuple[float, float, float, float]:
        """mean, std of the metric; median core-seconds and tokens per run."""
        std = statistics.stdev(self.metrics) if len(self.runs) > 1 else 0.0
        seconds = statistics.median(map(core_seconds, self.runs))
        tokens = statistics.median(float(r.get("train_tokens") or 0) for r in self.runs)
        return statistics.fmean(self.metrics), std, seconds, tokens


def read_predictions(run: dict, runs_dir: str | Path = ".") -> pd.DataFrame:
    """A run's stored per-example predictions (a path relative to its runs folder), checked against the digest
    the study keeps."""
    stored = run.get("predictions")
    if not stored:
        raise SystemExit(f"run of seed {run['seed']} has no stored predictions (retrain it with this autopeft)")
    path = Path(runs_dir) / stored["file"]
    if hashlib.sha256(path.read_bytes()).hexdigest() != stored["sha256"]:
        raise SystemExit(f"{path}: its digest differs from the one the study stored")
    return pd.read_csv(path)


def paired_interval(
    a: list[dict], b: list[dict], metric: str, runs_dir: str | Path = "."
) -> tuple[float, float] | None:
    """The paired bootstrap interval of ``mean over a's seeds - mean over b's seeds`` of the metric, in points;
    ``None`` for runs stored before per-example predictions were (the committed stores of earlier turns).

    Args:
        a: one configuration's runs (one per seed).
        b: the other's (LoRA's).
        metric: the task's metric.
        runs_dir: the runs folder the predictions' paths are relative to.
    """
    from scipy.stats import bootstrap

    if not all(run.get("predictions") for run in [*a, *b]):
        return None
    frames = [read_predictions(run, runs_dir) for run in [*a, *b]]
    gold = frames[0]["label"].to_numpy()
    if any(len(f) != len(gold) or not np.array_equal(f["label"].to_numpy(), gold) for f in frames):
        raise SystemExit("the runs were scored on different examples: no paired interval")
    predicted = [f["predicted"].to_numpy() for f in frames]

    def difference(labels: np.ndarray, *outputs: np.ndarray) -> float:
        scores = [compute_metrics([metric], out, labels)[metric] for out in outputs]
        return 100 * (float(np.mean(scores[: len(a)])) - float(np.mean(scores[len(a) :])))

    result = bootstrap(
        (gold, *predicted), difference, paired=True, vectorized=False, n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE, method="percentile", random_state=np.random.default_rng(0),
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def is_lora(pick, base_runs: list) -> bool:
    """Whether a pick is the status quo and that is the LoRA r=8 baseline's configuration itself."""
    lora = [t.user_attrs["config"] for t in base_runs if t.user_attrs.get("baseline") == "lora"]
    return pick.is_status_quo and bool(lora) and pick.trial.user_attrs["config"] == lora[0]


def baseline_runs(view: StudyView, storage: str) -> list:
    """The stored runs of the baselines beside a study (empty before any ran)."""
    what = view.spec.what
    name = baselines_study_name(get_task(what.task).name, what.model, what.budget)
    try:
        return stored_runs(optuna.load_study(study_name=name, storage=connect_storage(storage)))
    except KeyError:
        return []


def share_baselines(view: StudyView, runs_dir: str, source: str) -> None:
    """Copy the baselines beside a study from another runs folder of its task: their study and per-example predictions.

    Arms of one task (a design change, a search seed) then compare with the same LoRA r=8 runs. Trained again, those
    runs would repeat bit for bit (the same configuration, seeds and schedule) at three fine-tunes each time. A runs
    folder that holds them already is left as it is; the baselines step then trains only what neither holds.

    Args:
        view: the study the baselines stand beside.
        runs_dir: its runs folder.
        source: the runs folder to copy them from.
    """
    what = view.spec.what
    name = baselines_study_name(get_task(what.task).name, what.model, what.budget)
    target, origin = RunsDir.at(Path(runs_dir).resolve()), RunsDir.at(Path(source).resolve())
    if not (origin.root / "optuna.db").is_file():
        raise SystemExit(f"--baselines-from: {origin.root} holds no study store")
    if name in optuna.get_all_study_names(connect_storage(target.storage)):
        return
    if name not in optuna.get_all_study_names(connect_storage(origin.storage)):
        raise SystemExit(f"--baselines-from: {origin.root} holds no baselines study {name}")
    if origin.predictions(name).is_dir():
        shutil.copytree(origin.predictions(name), target.predictions(name), dirs_exist_ok=True)
    optuna.copy_study(
        from_study_name=name, from_storage=connect_storage(origin.storage), to_storage=connect_storage(target.storage)
    )
    print(f"baselines: {name} copied from {origin.root}")


def retrained_rows(view: StudyView, storage: str, only: str) -> tuple[dict[str, Row], dict]:
    """The retrained runs of a study's picks (``knee``, ``best``) and of its baselines, by row, and the picks.

    Args:
        view: the study.
        storage: its store.
        only: the baselines (``lora,houlsby``).
    """
    base_runs = baseline_runs(view, storage)
    rows: dict[str, Row] = {}
    for baseline in only.split(","):
        found = [t.user_attrs for t in base_runs if t.user_attrs.get("baseline") == baseline and t.values]
        found = [r for r in found if r["settings"] == found[-1]["settings"]] if found else []
        if found:
            rows[baseline] = Row(found[-1]["label"], found[-1]["trainable_fraction"], found)
    picks = {which: view.pick(which) for which in ("knee", "best")}
    for which, pick in picks.items():
        label = f"autopeft {which} ({'the status quo' if pick.is_status_quo else f'trial {pick.key}'})"
        stored = [r for r in view.retrains.get(pick.key, []) if "metric" in r]
        if "lora" in rows and is_lora(pick, base_runs):  # its runs are the baseline's: same config, seeds, schedule
            rows[which] = Row(label, rows["lora"].fraction, rows["lora"].runs)
        elif stored:
            stored = [r for r in stored if r["settings"] == stored[-1]["settings"]]
            rows[which] = Row(label, pick.trial.user_attrs["trainable_fraction"], stored)
    return rows, picks


def report(name: str, runs_dir: str, seeds: int, only: str) -> dict | None:
    """Print one run's table and final line; return its figures (``None`` until knee, best and LoRA hold every seed).

    Args:
        name: the run's name (its study is ``quality-<name>``).
        runs_dir: its runs folder.
        seeds: seeds each configuration needs.
        only: the baselines it trains (``lora,houlsby``).
    """
    storage = RunsDir.at(Path(runs_dir).resolve()).storage
    view = StudyView.load(f"quality-{name}", storage)
    task = get_task(view.spec.what.task)
    rows, picks = retrained_rows(view, storage, only)

    search_seconds, search_tokens, search_runs = search_compute(view)
    print(
        f"\n{name}: {task.name}, validation {task.metric}, {seeds} seeds, {_FULL.epochs:g} epochs of the whole "
        "train split"
    )
    print(f"| configuration | trainable % | {task.metric} (mean ± std) | training core-s per run | seeds |")
    print("|---|---|---|---|---|")
    order = ["knee", "best", *only.split(",")]
    for row in (rows[k] for k in order if k in rows):
        mean, std, seconds, _ = row.summary()
        print(f"| {row.label} | {100 * row.fraction:.3f} | {mean:.4f} ± {std:.4f} | {seconds:.0f} | {len(row.runs)} |")
    record = next((r for r in view.attrs.get(keys.SEARCH_RUNS, []) if r["trials_run"]), {})
    if "seconds" in record:
        print(
            f"search: {search_runs} trainings (trials at every rung, the status quo, confirmations), "
            f"{search_seconds:.0f} training core-s; wall {record['seconds'] / 60:.1f} min for {record['trials_run']} "
            f"trials on {record['workers']} workers, start-up estimate {record['estimate_seconds'] / 60:.1f} min "
            f"({100 * (record['estimate_seconds'] / record['seconds'] - 1):+.0f}%)"
        )
    first = view.attrs.get(keys.FIRST_RUNG) or {}
    for event in first.get("events", []):
        print(f"search: {event}")
    margin = view.learnt_margin()
    if margin is not None:
        verdict = "learnt" if view.not_learnt_warning() is None else "not learnt: its ranking says little"
        print(f"search's best neg_loss above the label prior's: {100 * margin:.1f}% of its loss ({verdict})")
    if picks["best"].is_status_quo:
        print(f"search: {picks['best'].verdict}")
    missing = [k for k in order if k not in rows]
    if missing:
        print(f"not trained yet: {', '.join(missing)} (the run without --report trains them)")
    if any(k not in rows or len(rows[k].runs) < seeds for k in ("knee", "best", "lora")):
        print(f"{name}: no final line until knee, best and lora hold {seeds} seeds each")
        return None
    lora_mean, _, _, lora_tokens = rows["lora"].summary()
    parts = [f"{part} {tokens(runs) / lora_tokens:.2f} ({len(runs)})" for part, runs in trained_by_part(view).items()]
    print(f"search compute in LoRA fine-tunes by part (training tokens; trainings): {', '.join(parts)}")
    figures = {"task": task.name, "name": name, "status_quo": picks["best"].is_status_quo}
    for which in ("knee", "best"):
        figures[f"{which}_minus_lora"] = 100 * (rows[which].summary()[0] - lora_mean)
        figures[f"{which}_ci90"] = paired_interval(rows[which].runs, rows["lora"].runs, task.metric, runs_dir)
    figures["knee_params_vs_lora"] = rows["knee"].fraction / rows["lora"].fraction
    figures["compute"] = search_tokens / lora_tokens
    ci = {
        w: ",".join(f"{x:.2f}" for x in figures[f"{w}_ci90"]) if figures[f"{w}_ci90"] else "n/a"
        for w in ("best", "knee")
    }
    line = (
        f"task={task.name} knee_minus_lora={figures['knee_minus_lora']:.2f} "
        f"best_minus_lora={figures['best_minus_lora']:.2f} "
        f"best_ci90={ci['best']} knee_ci90={ci['knee']} search_compute_in_lora_finetunes={figures['compute']:.2f} "
        f"best_is_status_quo={'yes' if figures['status_quo'] else 'no'}"
    )
    print(line)
    figures["line"] = line
    return figures


def front_hypervolume(view: StudyView, reference: float, limit: float) -> float:
    """The hypervolume of a search's Pareto set on the selection split (metric, mean over seeds, against trainable
    fraction), in metric points x shares of the budget, above ``reference`` and below the budget.

    Args:
        view: the search.
        reference: the metric the volume starts at.
        limit: the budget as a trainable fraction.
    """
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    points = [(100 * values[0], -values[1] / limit) for _, values, _ in view.pareto]
    above = [p for p in points if p[0] > 100 * reference and p[1] > -1.0]
    if not above:
        return 0.0
    ref = torch.tensor([100 * reference, -1.0], dtype=torch.double)
    return float(Hypervolume(ref).compute(torch.tensor(above, dtype=torch.double)))


def compare(names: list[str], runs_root: str, seeds: int, only: str) -> str:
    """Two searches of one task and search seed that differ in one option (the sampler): what each found on the
    selection split, what its picks gave on validation, and the paired interval of the knees' difference.

    Args:
        names: the two runs' names (``mrpc``, ``mrpc-random``).
        runs_root: the folder of the tasks' runs folders.
        seeds: seeds each retrained configuration needs.
        only: the baselines (``lora,houlsby``).
    """
    if len(names) != 2 or task_of(names[0]) != task_of(names[1]):
        raise SystemExit("--compare takes two runs of one task, e.g. mrpc,mrpc-random")
    runs_dir = str(Path(runs_root) / task_of(names[0]))
    storage = RunsDir.at(Path(runs_dir).resolve()).storage
    views = [StudyView.load(f"quality-{name}", storage) for name in names]
    if len({v.spec.how.seed for v in views}) != 1:
        raise SystemExit("--compare: the two searches ran with different search seeds")
    task = get_task(views[0].spec.what.task)
    found = [retrained_rows(view, storage, only) for view in views]
    rows = [row for row, _ in found]
    if any(k not in r or len(r[k].runs) < seeds for r in rows for k in ("knee", "best", "lora")):
        raise SystemExit(f"--compare: knee, best and lora need {seeds} retrained seeds in both runs")
    quo = views[0].status_quo.user_attrs
    backbone = quo["trainable_params"] / quo["trainable_fraction"]
    limit = parse_budget(views[0].spec.what.budget).limit(round(backbone)) / backbone
    reference = min(values[0] for view in views for _, values, _ in view.pareto)
    print(
        f"\n{task.name}: {names[0]} against {names[1]} (search seed {views[0].spec.how.seed}); selection split: "
        f"mean over seeds; hypervolume in {task.metric} points x budget shares above {reference:.4f}, the lowest "
        "point of either Pareto set"
    )
    print(
        "| search | sampler | trained to the end | compute (LoRA fine-tunes) | best trial (selection) | "
        "Pareto hypervolume (selection) | knee (params vs LoRA) | knee - LoRA (validation) | best |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    figures = []
    for name, view, (row, picks) in zip(names, views, found, strict=True):
        lora_mean, _, _, lora_tokens = row["lora"].summary()
        front, knee, best = view.pareto, picks["knee"], picks["best"]
        volume = front_hypervolume(view, reference, limit)
        compute = search_compute(view)[1] / lora_tokens
        knee_points = 100 * (row["knee"].summary()[0] - lora_mean)
        figures.append({"volume": volume, "compute": compute})
        print(
            f"| {name} | {view.spec.how.sampler} | {len(view.states(TrialState.COMPLETE))} | {compute:.2f} | "
            f"trial {front[0][0].number}: {front[0][1][0]:.4f} | {volume:.3f} | trial {knee.key} "
            f"({row['knee'].fraction / row['lora'].fraction:.2f}x) | {knee_points:+.2f} | "
            f"{'the status quo' if best.is_status_quo else f'trial {best.key}'} "
            f"({100 * (row['best'].summary()[0] - lora_mean):+.2f}) |"
        )
    knees = [row["knee"] for row in rows]
    difference = 100 * (knees[0].summary()[0] - knees[1].summary()[0])
    interval = paired_interval(knees[0].runs, knees[1].runs, task.metric, runs_dir)
    ci = ",".join(f"{x:.2f}" for x in interval) if interval else "n/a"
    ratio = figures[0]["volume"] / figures[1]["volume"] if figures[1]["volume"] else float("inf")
    line = (
        f"compare={names[0]},{names[1]} knee_difference={difference:.2f} knee_difference_ci90={ci} "
        f"hypervolume_ratio={ratio:.2f} compute_ratio={figures[0]['compute'] / figures[1]['compute']:.2f}"
    )
    print(line)
    return line


def task_of(name: str) -> str:
    """The task a run's name starts with (``mrpc-seed1`` -> ``mrpc``)."""
    return name.split("-")[0]


def summary_line(figures: list[dict]) -> str:
    """The last line over every task: one figure per task (the mean over its search seeds).

    Args:
        figures: each run's figures (:func:`report`).
    """
    by_task: dict[str, list[dict]] = {}
    for f in figures:
        by_task.setdefault(f["task"], []).append(f)

    def per_task(key: str) -> list[float]:
        return [statistics.fmean(f[key] for f in runs) for runs in by_task.values()]

    best, knee = per_task("best_minus_lora"), per_task("knee_minus_lora")
    return (
        f"tasks={len(by_task)} mean_best_minus_lora={statistics.fmean(best):.2f} worst_best_minus_lora={min(best):.2f} "
        f"mean_knee_minus_lora={statistics.fmean(knee):.2f} "
        f"knee_params_vs_lora={max(f['knee_params_vs_lora'] for f in figures):.2f} "
        f"max_search_compute_in_lora_finetunes={max(f['compute'] for f in figures):.2f}"
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--name", help="the run's name (default: the task's): its study is quality-<name>")
    parser.add_argument("--budget", default="0.5%")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"))
    parser.add_argument(
        "--runs-root",
        default="runs/quality",
        help="folder of the runs folders, one per task (its runs share baselines)",
    )
    parser.add_argument(
        "--baselines-from",
        help="another runs root whose runs folder of this task holds the baselines: copied, not trained again",
    )
    parser.add_argument("--full", action="store_true", help="also full fine-tuning (slow on CPUs)")
    parser.add_argument("--search-args", default="", help="further search options, e.g. '--seed 1'")
    parser.add_argument("--retrain-args", default="", help="further retrain/baselines options (smoke runs)")
    parser.add_argument("--report", action="store_true", help="train nothing: the table of what the stores hold")
    parser.add_argument("--summary", help="train nothing: every named run's table and line, then the last line")
    parser.add_argument("--compare", help="train nothing: two runs of one task and seed side by side (A,B)")
    args = parser.parse_args(argv)
    only = "lora,houlsby" + (",full" if args.full else "")

    if args.compare:
        return compare(args.compare.split(","), args.runs_root, args.seeds, only)

    if args.summary:
        names = args.summary.split(",")
        figures = [report(name, str(Path(args.runs_root) / task_of(name)), args.seeds, only) for name in names]
        done = [f for f in figures if f is not None]
        if len(done) < len(figures):
            print(f"\n{len(figures) - len(done)} of {len(figures)} runs are not complete: no last line yet")
            return ""
        quo = sum(f["status_quo"] for f in done)
        print(
            f"\nbest was the status quo (nothing beat LoRA r=8 on the selection split) in {quo} of {len(done)} searches"
        )
        line = summary_line(done)
        print(line)
        return line

    task = get_task(args.task)
    name = args.name or task.name
    runs_dir = str(Path(args.runs_root) / task.name)
    common = ["--runs-dir", runs_dir] + (["--data-dir", args.data_dir] if args.data_dir else [])
    schedule = FULL_FIDELITY + args.retrain_args.split() + ["--seeds", str(args.seeds)]
    study = f"quality-{name}"
    if not args.report:
        _run(
            [
                "search",
                "--task",
                args.task,
                "--budget",
                args.budget,
                "--study",
                study,
                *common,
                *args.search_args.split(),
            ]
        )
        storage = RunsDir.at(Path(runs_dir).resolve()).storage
        if args.baselines_from:
            share_baselines(StudyView.load(study, storage), runs_dir, str(Path(args.baselines_from) / task.name))
        _run(["baselines", "--study", study, "--only", only, *common, *schedule])
        stored = StudyView.load(study, storage)
        picks = ["knee"] + ([] if is_lora(stored.pick("best"), baseline_runs(stored, storage)) else ["best"])
        _run(["retrain", "--study", study, "--pick", *picks, *common, *schedule])
    figures = report(name, runs_dir, args.seeds, only)
    return figures["line"] if figures else ""


if __name__ == "__main__":
    main(sys.argv[1:])
