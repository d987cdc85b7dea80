"""Early stopping on and off: training compute saved, and the final Pareto set's hypervolume, side by side.

For each seed (``--seeds``, default 0 1 2) runs the same search twice (``autopeft search`` with the
search's default proxy, real Ray, real storage):

- ``off``: every trial trains to the end. Its trials are still scored at the rungs 1/8, 1/4, 1/3
  and 1/2 (a policy that never stops: grace larger than the study), and every trial stores its
  per-step training losses, so the same run also gives ``replay``; its cost excludes those rung
  evaluations, as a run without early stopping would not make them.
- ``on``: the policy (``--rungs``, ``--reduction``, ``--grace``, ``--score``; default: the
  search's defaults).
- ``replay``: the policy replayed on the ``off`` run's trials in their order: the same
  configurations, so it shows the policy's effect without the optimiser's different path; with
  ``--replay-only`` (no ``on`` run) any policy whose rungs were observed can be tried in minutes.

Compute is counted as training steps (``train_steps``) and as trial seconds (training plus every
evaluation, rungs included). Hypervolume of the trained-to-the-end trials: task metric (max) vs
trainable fraction (min), reference point (0, the budget's fraction). One row per seed and run,
then the mean and the worst seed; the last line is
``compute_saved=<worst seed's fraction of training steps> seconds_saved=<worst> hv_ratio=<worst on/off>``.

    python bench/early_stopping_bench.py --data-dir ../shared/data/glue          # 3 seeds x 2 searches of 24 trials
    python bench/early_stopping_bench.py --quick --data-dir ../shared/data/glue  # one seed, 8 short trials

SST-2 by default: at proxy scale its accuracy moves within a few dozen steps, whereas MRPC's F1 and
RTE's accuracy still sit at the majority class. A rerun continues the studies where they stopped
(same runs folder), so finished seeds are not run again.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autopeft import defaults
from autopeft.execution import RungBoard
from autopeft.pareto import hypervolume
from autopeft.study import EarlyStopping, parse_fractions
from autopeft.training.proxy import train_loss_score

OBSERVE_ONLY = 10**9
"""Grace of the off runs' policy: more trials than any study, so nothing stops."""
OBSERVE_RUNGS = (1 / 8, 1 / 4, 1 / 3, 1 / 2)
"""Rungs the off runs score every trial at (the replayed policies' rungs are among them)."""


def front_hypervolume(points: list[tuple[float, float]], ref_fraction: float) -> float:
    """Hypervolume of (metric, fraction) points: metric maximised from 0, fraction minimised up to the budget."""
    return hypervolume(points, [True, False], [0.0, ref_fraction])


def summarise(trials: list[optuna.trial.FrozenTrial], ref: float, count_rung_evals: bool) -> dict:
    """Cost and hypervolume of one run's trials."""
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    attrs = [t.user_attrs for t in done]
    rung_seconds = 0.0 if count_rung_evals else sum(a.get("rung_eval_seconds", 0.0) for a in attrs)
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    return {
        "trials": len(done),
        "pruned": len(done) - len(complete),
        "train_steps": sum(a["steps"] for a in attrs),
        "seconds": sum(a["train_seconds"] + a["eval_seconds"] for a in attrs) - rung_seconds,
        "hv": front_hypervolume([(t.values[0], t.user_attrs["trainable_fraction"]) for t in complete], ref),
    }


def replay(trials: list[optuna.trial.FrozenTrial], policy: EarlyStopping, ref: float) -> dict:
    """The policy applied to an observe-only run's trials, in trial order (no optimiser feedback).

    The observe-only run scored every trial at each of :data:`OBSERVE_RUNGS`; the policy's rungs
    must be among them.
    """
    if policy.score == "neg_loss":
        missing = [r for r in policy.rungs if not any(math.isclose(r, o) for o in OBSERVE_RUNGS)]
        if missing:
            raise SystemExit(f"replay: rungs {missing} were not observed (observed: {list(OBSERVE_RUNGS)})")
        columns = [next(i for i, o in enumerate(OBSERVE_RUNGS) if math.isclose(r, o)) for r in policy.rungs]
    elif policy.score != "train_loss":
        raise SystemExit(f"replay: score {policy.score!r} was not observed")
    board = RungBoard(policy)
    steps, seconds, points, pruned = 0, 0.0, [], 0
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state != TrialState.COMPLETE:
            continue
        attrs, total = trial.user_attrs, trial.user_attrs["steps"]
        observed = attrs["rung_scores"]
        per_rung_eval = attrs.get("rung_eval_seconds", 0.0) / max(1, len(observed))
        if policy.score == "neg_loss":
            scores, evals = [observed[c] for c in columns], list(range(1, len(columns) + 1))
        else:  # as the trainer scores it: the recent training losses, one evaluation when it stops
            ends = [max(1, math.ceil(r * total)) for r in policy.rungs]
            scores = [train_loss_score(attrs["train_losses"][:end], total) for end in ends]
            evals = [1] * len(ends)
        stopped = next(
            (r for r, m in enumerate(scores) if board.decide(trial.number, r, m, attrs["trainable_params"])), None
        )
        if stopped is None:
            steps += total
            kept_evals = len(columns) if policy.score == "neg_loss" else 0
            seconds += attrs["train_seconds"] + attrs["eval_seconds"] - (len(observed) - kept_evals) * per_rung_eval
            points.append((trial.values[0], attrs["trainable_fraction"]))
        else:
            pruned += 1
            share = policy.rungs[stopped]
            steps += math.ceil(share * total)
            seconds += share * attrs["train_seconds"] + evals[stopped] * per_rung_eval
    return {"trials": len(trials), "pruned": pruned, "train_steps": steps, "seconds": seconds,
            "hv": front_hypervolume(points, ref)}  # fmt: skip


def run_search(args: argparse.Namespace, study: str, seed: int, extra: list[str]) -> float:
    """Run (or continue) one study with the CLI; return its wall seconds."""
    command = [
        sys.executable, "-m", "autopeft.cli", "search", "--task", args.task, "--budget", args.budget,
        "--trials", str(args.trials), "--workers", str(args.workers), "--epochs", str(args.epochs),
        "--max-train-samples", str(args.max_train_samples), "--seed", str(seed), "--runs-dir", args.out,
        "--study", study, "--early-stopping", *extra,
    ]  # fmt: skip
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    started = time.perf_counter()
    print(f"running {study} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"{study}: autopeft search exited with {done.returncode}")
    return time.perf_counter() - started


def fractions_text(rungs: tuple[float, ...]) -> str:
    """Rungs as the CLI reads them (``1/4,1/2``)."""
    return ",".join(str(Fraction(r).limit_denominator(64)) for r in rungs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--budget", default="0.5%")
    parser.add_argument("--trials", type=int, default=defaults.TRIALS)
    parser.add_argument("--workers", type=int, default=defaults.WORKERS)
    parser.add_argument("--epochs", type=float, default=defaults.EPOCHS)
    parser.add_argument("--max-train-samples", type=int, default=defaults.MAX_TRAIN_SAMPLES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one pair of searches per seed")
    parser.add_argument("--rungs", default=fractions_text(defaults.RUNGS), help="policy rungs (among the observed)")
    parser.add_argument("--reduction", type=float, default=defaults.REDUCTION)
    parser.add_argument("--grace", type=int, default=defaults.GRACE)
    parser.add_argument("--score", default="neg_loss", help="what the policy's rungs compare")
    parser.add_argument("--replay-only", action="store_true", help="run (or reuse) the off runs; replay the policy")
    parser.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"))
    parser.add_argument("--out", default="runs/bench/early_stopping")
    parser.add_argument("--quick", action="store_true", help="8 trials of 256 examples, one seed")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.max_train_samples, args.seeds = 8, 256, args.seeds[:1]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    args.out = str(Path(args.out).resolve())
    rungs = parse_fractions(args.rungs, "--rungs")
    policy = EarlyStopping(rungs=rungs, reduction=args.reduction, grace=args.grace, score=args.score)
    observe = ["--early-stopping-rungs", fractions_text(OBSERVE_RUNGS), "--early-stopping-grace", str(OBSERVE_ONLY)]
    on = ["--early-stopping-rungs", args.rungs, "--early-stopping-reduction", str(args.reduction),
          "--early-stopping-grace", str(args.grace), "--early-stopping-score", args.score]  # fmt: skip

    from autopeft.budget import parse_budget
    from autopeft.models import backbone_info, default_model
    from autopeft.tasks import get_task

    info = backbone_info(default_model(), get_task(args.task).num_labels)
    ref = parse_budget(args.budget).limit(info.backbone_params) / info.backbone_params
    storage = f"sqlite:///{args.out}/optuna.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{args.task}, {args.trials} trials, {args.workers} workers, {args.epochs:g} epoch(s) of "
          f"{args.max_train_samples} examples; policy: rungs {args.rungs}, keep 1/{args.reduction:g}, "
          f"grace {args.grace}, score {args.score}")  # fmt: skip
    print(f"{'seed':>4} {'run':>7} {'trials':>6} {'pruned':>6} {'train steps':>11} {'trial s':>8} {'wall s':>7} "
          f"{'HV':>9} {'saved':>6} {'HV ratio':>8}")  # fmt: skip
    totals: dict[str, list[dict]] = {"on": [], "replay": []}
    for seed in args.seeds:
        studies = {
            "off": f"es-off-s{seed}",
            "on": f"es-on-s{seed}-{args.rungs}-{args.reduction:g}-{args.grace}-{args.score}",
        }
        wall = {"off": run_search(args, studies["off"], seed, observe)}
        if not args.replay_only:
            wall["on"] = run_search(args, studies["on"], seed, on)
        trials = {name: optuna.load_study(study_name=studies[name], storage=storage).get_trials() for name in wall}
        rows = {"off": summarise(trials["off"], ref, count_rung_evals=False)}
        if "on" in trials:
            rows["on"] = summarise(trials["on"], ref, count_rung_evals=True)
        rows["replay"] = replay(trials["off"], policy, ref)
        off = rows["off"]
        for name, row in rows.items():
            row["saved"] = 1 - row["train_steps"] / off["train_steps"]
            row["seconds_saved"] = 1 - row["seconds"] / off["seconds"]
            row["hv_ratio"] = row["hv"] / off["hv"]
            if name in totals:
                totals[name].append(row)
            wall_s = f"{wall[name]:7.0f}" if name in wall else f"{'-':>7}"
            print(f"{seed:4d} {name:>7} {row['trials']:6d} {row['pruned']:6d} {row['train_steps']:11d} "
                  f"{row['seconds']:8.0f} {wall_s} {row['hv']:9.6f} {row['saved']:6.3f} {row['hv_ratio']:8.4f}",
                  flush=True)  # fmt: skip
    for name, rows in totals.items():
        if rows:
            saved = [r["saved"] for r in rows]
            print(f"{name}: compute_saved mean {sum(saved) / len(saved):.3f} min {min(saved):.3f}; "
                  f"seconds_saved mean {sum(r['seconds_saved'] for r in rows) / len(rows):.3f}; "
                  f"hv_ratio min {min(r['hv_ratio'] for r in rows):.4f}")  # fmt: skip
    last = totals["on"] or totals["replay"]
    print(f"compute_saved={min(r['saved'] for r in last):.3f} "
          f"seconds_saved={min(r['seconds_saved'] for r in last):.3f} "
          f"hv_ratio={min(r['hv_ratio'] for r in last):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
