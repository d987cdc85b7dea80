"""Replay a finished search's rung decisions on its recorded scores, under other rung rules: what each rule would
have trained, and whether the search would still have picked the same configurations.

A search stores every entry's score, ``neg_loss`` and step at each rung it reached, and when it started and
ended. The replay feeds those records, in the order they arose, to the search's own
:class:`autopeft.execution.rungs.RungBoard` built with another policy, and drops what an entry would no longer
have trained after a stop. Only the rule changes; the configurations, their scores and the order stay those
recorded (with fewer trials or earlier stops, a real search's sampler would have seen other observations and
proposed other configurations after the first stop: the replay cannot tell that part).

- The first rung starts settled where the search settled it (the raises before are not stored as ranked
  entries).
- Each record's time: the entry's start plus its share of the run (a trial trains at an even pace).
- A rule that would take an entry past its last recorded rung has no score to go on: the replay stops it there
  and counts it under ``unrecorded`` (a stricter rule than the search's never does).
- Compute: every entry's tokens up to where it stops, the status quo's, and the confirmations as recorded, in
  LoRA r=8 fine-tunes (the quality bench's denominator: its LoRA baseline's training tokens per run).
- Picks: the noise-aware Pareto set of the entries trained to the end (confirmations included) and its best and
  knee, through the functions ``autopeft pareto`` uses; ``same`` when they are the search's own.

Variants: the search's own policy (which must reproduce the recorded stops: the first row checks it), fewer
trials (the first N by number), a stricter reduction on the same rungs, ranking on the score alone (every
entry counted with the same size, so a small trial gets no protection), and synchronous halving (every entry
waits at a rung for all the others: promotion-based halving, which pauses trials). Run::

    python bench/rung_replay.py --store bench/results/stores/full-fidelity/mrpc --name quality-mrpc

The last line: ``study=.. recorded_compute=.. replay_matches=yes|no`` then ``<variant>=<compute>/<best same>/<knee
same>`` per variant.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState
from quality import Row, baseline_runs, tokens

from autopeft import keys
from autopeft.execution.rungs import RungBoard, learnt, should_stop
from autopeft.pareto import mean_metric
from autopeft.results import STATUS_QUO_KEY
from autopeft.runs_dir import RunsDir
from autopeft.study import Rungs, StudyView
from autopeft.tasks import get_task

TRIAL_COUNTS = (12, 8)
REDUCTIONS = (4.0, 6.0)


@dataclass
class Entry:
    """One trained entry of the search (a trial, or the status quo) as its records show it.

    Attributes:
        key: the trial's number, or the status quo's key.
        params: its trainable parameters.
        records: ``(fraction, score, neg_loss)`` at each rung it was ranked at, in order.
        times: when each record arose (seconds since the epoch).
        full_tokens: the tokens of its whole schedule.
        stopped: whether the search stopped it at a rung.
    """

    key: int | str
    params: int
    records: list[tuple[float, float, float]]
    times: list[float]
    full_tokens: float
    stopped: bool


def entries(view: StudyView) -> list[Entry]:
    """The search's trials trained to the end or stopped at a rung, and the status quo, as :class:`Entry`."""
    runs = [(t.number, t) for t in view.states(TrialState.COMPLETE, TrialState.PRUNED)]
    if view.status_quo is not None:
        runs.append((STATUS_QUO_KEY, view.status_quo))
    found = []
    for key, trial in runs:
        attrs = trial.user_attrs
        ranked = [r for r in attrs.get(keys.RUNGS, []) if r.get("level") is not None]
        last = 1.0 if trial.state == TrialState.COMPLETE else ranked[-1]["fraction"]
        start, end = trial.datetime_start.timestamp(), trial.datetime_complete.timestamp()
        found.append(
            Entry(
                key,
                int(attrs[keys.TRAINABLE_PARAMS]),
                [(r["fraction"], r["score"], r["metrics"]["neg_loss"]) for r in ranked],
                [start + (end - start) * r["fraction"] / last for r in ranked],
                float(attrs["train_tokens"]) * int(attrs["total_steps"]) / int(attrs["steps"]),
                trial.state == TrialState.PRUNED,
            )
        )
    return found


class _RecordedLadder(Rungs):
    """A policy whose rungs are the recorded ones whatever its reduction (a stricter cut on the same snapshots)."""

    recorded: tuple[float, ...] = ()

    def ladder(self, first: float | None = None) -> tuple[float, ...]:
        return (*self.recorded, 1.0)


@dataclass
class Outcome:
    """What a rule would have trained.

    Attributes:
        reached: entry key -> the fraction of its schedule it trains (1.0: to the end).
        unrecorded: entries the rule takes past their last recorded rung (stopped there instead).
    """

    reached: dict[int | str, float]
    unrecorded: int


def replay(found: list[Entry], policy: Rungs, first: float, prior: float | None, same_size: bool) -> Outcome:
    """Feed the records to a :class:`RungBoard` in the order they arose; where each entry stops.

    Args:
        found: the entries.
        policy: the rule to replay.
        first: the settled first rung.
        prior: the label prior's ``neg_loss``.
        same_size: count every entry with the same parameters (rank on the score alone).
    """
    board = RungBoard(policy, prior, first)
    events = sorted((when, i, k) for i, e in enumerate(found) for k, when in enumerate(e.times))
    reached = {e.key: 0.0 for e in found}
    alive = set(range(len(found)))
    unrecorded = 0
    for _, i, k in events:
        if i not in alive:
            continue
        entry = found[i]
        fraction, score, neg_loss = entry.records[k]
        params = 0 if same_size else entry.params
        decision = board.decide(entry.key, fraction, score, neg_loss, params, keep=entry.key == STATUS_QUO_KEY)
        reached[entry.key] = fraction
        if decision.next_fraction is None:
            alive.discard(i)
        elif k == len(entry.records) - 1:  # its last recorded rung: on to the end, if the search went there
            if entry.stopped:
                unrecorded += 1
            else:
                reached[entry.key] = 1.0
            alive.discard(i)
    return Outcome(reached, unrecorded)


def replay_synchronous(found: list[Entry], policy: Rungs, first: float, prior: float | None) -> Outcome:
    """Synchronous successive halving on the same records: every entry waits at a rung until all have reached it,
    then each goes on only within the top ``1 / reduction`` of them all (the rule's own :func:`should_stop`;
    a later rung where no entry has learnt stops none, as in the search). What promotion-based halving, which
    pauses trials at a rung, would have trained.

    Args:
        found: the entries.
        policy: the rule.
        first: the settled first rung.
        prior: the label prior's ``neg_loss``.
    """
    reached = {e.key: 0.0 for e in found}
    alive = list(found)
    unrecorded = 0
    for level, fraction in enumerate(policy.ladder(first)[:-1]):
        at = {}
        for entry in alive:
            record = next((r for r in entry.records if abs(r[0] - fraction) < 1e-6), None)
            if record is None:  # the search stopped it before: the rule would take it on unrecorded
                unrecorded += 1
            else:
                at[entry.key] = (entry, record)
        ranks = level == 0 or any(learnt(neg_loss, prior) for _, (_, _, neg_loss) in at.values())
        alive = []
        for key, (entry, (_, score, _)) in at.items():
            reached[key] = fraction
            peers = [(r[1], e.params) for k, (e, r) in at.items() if k != key]
            if key == STATUS_QUO_KEY or not ranks or not should_stop(policy, score, entry.params, peers):
                alive.append(entry)
    for entry in alive:
        if entry.stopped:
            unrecorded += 1
        else:
            reached[entry.key] = 1.0
    return Outcome(reached, unrecorded)


def picks(view: StudyView, ends: set[int]) -> tuple[int | None, int | None]:
    """Best and knee trial numbers among the trials ``ends`` trained to the end, as ``autopeft pareto`` picks."""
    front = view.pareto_of([t for t in view.states(TrialState.COMPLETE) if t.number in ends])
    if not front:
        return None, None
    return front[0][0].number, view.knee_of(front).number


def selection_metric(view: StudyView, number: int | None) -> float:
    """A trial's task metric, mean over its seeds on the split the search scored on (NaN for none)."""
    if number is None:
        return math.nan
    value, _ = mean_metric(view.trial(number), view.confirmations.get(number))
    return math.nan if value is None else value


def report(store: Path, name: str) -> dict:
    """Print the variants' table for one study; return ``matches`` (the search's own rule reproduces the recorded
    stops), ``compute`` (rule -> LoRA fine-tunes), ``same`` (rule -> best and knee unchanged) and its ``line``.

    Args:
        store: a runs folder (or a copy of a committed store: ``optuna.db``).
        name: the study.
    """
    with tempfile.TemporaryDirectory() as tmp:  # read a copy: a committed store stays untouched
        shutil.copy(store / "optuna.db", tmp)
        storage = RunsDir.at(Path(tmp)).storage
        view = StudyView.load(name, storage)
        lora = [t.user_attrs for t in baseline_runs(view, storage) if t.user_attrs.get("baseline") == "lora"]
        lora_tokens = Row("lora", 0.0, [r for r in lora if "metric" in r]).summary()[3] if lora else math.nan
        found = entries(view)
        first = (view.attrs.get(keys.FIRST_RUNG) or {}).get("fraction", view.spec.what.rungs.first)
        prior = view.prior
        confirmed = tokens([r for runs in view.confirmations.values() for r in runs if "values" in r])
        metric = get_task(view.spec.what.task).metric
        recorded_ladder = view.spec.what.rungs.ladder(first)[:-1]
        own = view.spec.what.rungs
        actual_best, actual_knee = picks(view, {e.key for e in found if e.key != STATUS_QUO_KEY and not e.stopped})
        trials = sorted(e.key for e in found if e.key != STATUS_QUO_KEY)
        variants: list[tuple[str, list[Entry], Rungs, bool]] = [("as searched", found, own, False)]
        for count in TRIAL_COUNTS:
            kept = set(trials[:count])
            subset = [e for e in found if e.key == STATUS_QUO_KEY or e.key in kept]
            variants.append((f"{count} trials", subset, own, False))
        for reduction in REDUCTIONS:
            policy = _RecordedLadder(**{**own.model_dump(), "reduction": reduction}, recorded=recorded_ladder)
            variants.append((f"reduction {reduction:g}", found, policy, False))
        variants.append(("score alone", found, own, True))
        variants.append(("synchronous", found, own, False))

        print(f"\n{name}: first rung {first:.3f}, rungs {', '.join(f'{f:.3f}' for f in recorded_ladder)}, then 1")
        quo, _ = view.status_quo_metric()
        header = (
            f"| rule | trials | to the end | compute (LoRA fine-tunes) | unrecorded | best | knee | best's {metric} |"
        )
        print(header)
        print("|---|---|---|---|---|---|---|---|")
        cells, matches, computes, sames = [], True, {}, {}
        for label, subset, policy, same_size in variants:
            if label == "synchronous":
                outcome = replay_synchronous(subset, policy, first, prior)
            else:
                outcome = replay(subset, policy, first, prior, same_size)
            trained = sum(e.full_tokens * outcome.reached[e.key] for e in subset) + confirmed
            compute = trained / lora_tokens
            ends = {k for k, f in outcome.reached.items() if f >= 1.0 and k != STATUS_QUO_KEY}
            best, knee = picks(view, ends)
            if label == "as searched":
                recorded = {e.key: (e.records[-1][0] if e.stopped else 1.0) for e in subset}
                matches = recorded == outcome.reached
            same = tuple(
                "same" if got == ours else f"trial {got}" for got, ours in ((best, actual_best), (knee, actual_knee))
            )
            score = selection_metric(view, best)
            print(
                f"| {label} | {len(subset) - 1} | {len(ends)} | {compute:.2f} | {outcome.unrecorded} | {same[0]} | "
                f"{same[1]} | {score:.4f} |"
            )
            computes[label], sames[label] = compute, (same[0] == "same", same[1] == "same")
            slug = label.replace(" ", "_")
            cells.append(f"{slug}={compute:.2f}/{same[0] == 'same'}/{same[1] == 'same'}".lower())
        print(
            f"search's picks: best trial {actual_best}, knee trial {actual_knee}; the status quo's {metric}: {quo:.4f} "
            f"(means over seeds on the {view.scored_on} split)"
        )
        line = f"study={name} replay_matches={'yes' if matches else 'no'} " + " ".join(cells)
        return {"matches": matches, "compute": computes, "same": sames, "line": line}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", required=True, type=Path, help="a folder with optuna.db")
    parser.add_argument("--name", action="append", required=True, help="a study in the store (as many as --store)")
    args = parser.parse_args(argv)
    if len(args.store) != len(args.name):
        parser.error("give one --name per --store")
    lines = [report(store, name)["line"] for store, name in zip(args.store, args.name, strict=True)]
    for line in lines:
        print(line)
    return lines[-1]


if __name__ == "__main__":
    main()
