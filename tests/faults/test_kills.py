"""``kill -9`` of a search at each moment that matters, then the same command: it resumes to exactly its target.

Each fault is killed when the stored state shows its phase (a few of a trial's values written, an MLflow
run open, a store's lock held), not at a random time: on a busy machine a random time rarely lands inside
a short phase. Failpoints (``AUTOPEFT_FAILPOINTS``) widen the shortest phases; each fault's seed picks the
trial, the number of values written and a small delay, so a failure repeats.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faults.harness import STUDY, TARGET, Process, check_resumed, locked, query, run, search_args, study_attr, trials

pytestmark = pytest.mark.slow


def main_study_trials(runs: Path) -> list[tuple]:
    return query(runs / "optuna.db", "SELECT t.trial_id, t.number, t.state FROM trials t JOIN studies s "
                 "USING (study_id) WHERE s.study_name = ?", STUDY)  # fmt: skip


def running_with(runs: Path, number: int, condition: Callable[[int], bool]) -> bool:
    """Whether trial ``number`` is RUNNING and ``condition(trial_id)`` holds of it."""
    return any(n == number and state == "RUNNING" and condition(tid) for tid, n, state in main_study_trials(runs))


def values_written(runs: Path, trial_id: int) -> int:
    return query(runs / "optuna.db", "SELECT count(*) FROM trial_params WHERE trial_id = ?", trial_id)[0][0]


def has_attr(runs: Path, trial_id: int, key: str) -> bool:
    return bool(query(runs / "optuna.db", "SELECT 1 FROM trial_user_attributes WHERE trial_id = ? AND key = ?",
                      trial_id, key))  # fmt: skip


PHASES: dict[str, tuple[dict, Callable[[Path, random.Random], Callable[[], bool]], int]] = {
    # name: (failpoints, phase predicate (runs, rng), training examples per trial)
    "study store being created": (
        {"storage.create": "2"},
        lambda runs, rng: lambda: locked(runs / "optuna.db.lock"),
        64,
    ),
    "mlflow store being created": ({"mlflow.open": "2"}, lambda runs, rng: lambda: locked(runs / "mlflow.db.lock"), 64),
    "proposal, no value written": (
        {"proposal.value": "0.3"},
        lambda runs, rng: (lambda n: lambda: running_with(runs, n, lambda t: values_written(runs, t) == 0))(
            rng.randint(0, 1)
        ),
        64,
    ),
    "proposal, some values written": (
        {"proposal.value": "0.15"},
        lambda runs, rng: (lambda n, k: lambda: running_with(runs, n, lambda t: values_written(runs, t) == k))(
            rng.randint(0, 1), rng.randint(1, 12)
        ),
        64,
    ),
    "training, before the first rung": (
        {},
        lambda runs, rng: (
            lambda n: (
                lambda: running_with(runs, n, lambda t: has_attr(runs, t, "config") and not has_attr(runs, t, "rungs"))
            )
        )(rng.randint(0, 1)),
        1024,
    ),
    "training, past a rung": (
        {},
        lambda runs, rng: (lambda n: lambda: running_with(runs, n, lambda t: has_attr(runs, t, "rungs")))(
            rng.randint(0, 1)
        ),
        2048,
    ),
    "status quo training": (
        {},
        lambda runs, rng: (
            lambda: bool(
                query(
                    runs / "optuna.db",
                    "SELECT 1 FROM trials t JOIN studies s USING "
                    "(study_id) WHERE s.study_name = ? AND t.state = 'RUNNING'",
                    f"{STUDY}.status-quo",
                )
            )
        ),
        1024,
    ),
    "confirmation in flight": (
        {},
        lambda runs, rng: lambda: bool(study_attr(runs, STUDY, "autopeft.confirming")),
        1024,
    ),
    "mlflow run being written": (
        {"mlflow.run": "1.5"},
        lambda runs, rng: (
            lambda: bool(
                query(
                    runs / "mlflow.db",
                    "SELECT 1 FROM runs r JOIN tags t USING (run_uuid) "
                    "WHERE r.status = 'RUNNING' AND t.key = 'autopeft.role' AND t.value = 'trial'",
                )
            )
        ),
        64,
    ),
    "first rung being raised": (
        {},
        lambda runs, rng: lambda: bool(study_attr(runs, STUDY, "autopeft.first_rung")),
        1024,
    ),
}


@pytest.mark.parametrize("seed", [0])
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_search_killed_at_this_moment_resumes_to_its_target(phase, seed, tmp_path, tiny_model, data_dir):
    failpoints, make_phase, samples = PHASES[phase]
    rng = random.Random(f"{phase}-{seed}")
    runs = tmp_path / "runs"
    args = search_args(tiny_model, data_dir, runs, samples, confirm=int(phase == "confirmation in flight"))
    env = {"AUTOPEFT_FAILPOINTS": ",".join(f"{k}={v}" for k, v in failpoints.items())} if failpoints else {}
    killed = Process(args, tmp_path / "killed.err", env)
    hit = killed.wait_for(make_phase(runs, rng))
    time.sleep(rng.uniform(0.0, 0.1))
    first = killed.kill()
    assert hit, f"the phase '{phase}' was never seen before the search ended: {first[-2000:]}"
    before = trials(runs, STUDY)
    code, again = run(args, tmp_path / "resumed.err")
    check_resumed(runs, STUDY, TARGET, before, [first, again], code)
