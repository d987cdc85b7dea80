"""Kill a search (or retrain, baselines) at a phase its stored state shows, run the same command again, and check
what a resumed run promises: nothing finished lost or changed, no configuration trained twice, no internal
error, exactly the target, one MLflow parent run."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from faults.tally import TALLY

DONE = ("COMPLETE", "PRUNED")
STUDY, TARGET = "faults", 2


def search_args(model: str, data_dir: str, runs: Path, samples: int = 64, trials_: int = TARGET, confirm: int = 0):
    """A tiny search: two trials of the tiny model on a slice of RTE, heartbeats that go stale in 3 s."""
    return ["search", "--task", "rte", "--budget", "2%", "--model", model, "--data-dir", data_dir,
            "--max-train-samples", str(samples), "--max-eval-samples", "64", "--epochs", "1", "--max-length", "64",
            "--runs-dir", str(runs), "--study", STUDY, "--workers", "2", "--heartbeat-grace", "3",
            "--confirm", str(confirm), "--trials", str(trials_)]  # fmt: skip


def query(db: Path, sql: str, *args) -> list[tuple]:
    """Rows of a read-only query on a SQLite store (an empty list while the store or its schema is not there)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def locked(lock_file: Path) -> bool:
    """Whether another process holds a store's lock file (``<store>.lock``) right now."""
    if not lock_file.exists():
        return False
    with open(lock_file, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def trials(runs: Path, study: str) -> list[dict]:
    """Every trial of a study as stored: number, state, values, configuration (read with plain SQL)."""
    rows = query(
        runs / "optuna.db",
        "SELECT t.trial_id, t.number, t.state FROM trials t JOIN studies s USING (study_id) WHERE s.study_name = ?",
        study,
    )
    found = []
    for trial_id, number, state in rows:
        values = [
            v
            for (v,) in query(
                runs / "optuna.db", "SELECT value FROM trial_values WHERE trial_id = ? ORDER BY objective", trial_id
            )
        ]
        attrs = dict(
            query(runs / "optuna.db", "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = ?", trial_id)
        )
        params = query(runs / "optuna.db", "SELECT count(*) FROM trial_params WHERE trial_id = ?", trial_id)[0][0]
        found.append({"number": number, "state": state, "values": values, "params": params,
                      "config": attrs.get("config"), "attrs": attrs})  # fmt: skip
    return found


def study_attr(runs: Path, study: str, key: str):
    """A study attribute as stored (``None`` when absent)."""
    rows = query(
        runs / "optuna.db",
        "SELECT a.value_json FROM study_user_attributes a JOIN studies s USING (study_id) WHERE s.study_name = ? AND a.key = ?",
        study,
        key,
    )
    return json.loads(rows[0][0]) if rows else None


class Process:
    """An ``autopeft`` command in a process group of its own (its Ray cluster inside), killed as ``kill -9`` does.

    Args:
        args: the command's arguments.
        log: where its stderr goes.
        env: further environment variables (failpoints).
    """

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.handle = open(log, "w")  # noqa: SIM115 - open while the process runs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autopeft.cli", *args], stdout=subprocess.DEVNULL, stderr=self.handle,
            start_new_session=True, env={**os.environ, **(env or {})},
        )  # fmt: skip

    def wait_for(self, phase: Callable[[], bool], timeout: float = 300) -> bool:
        """Poll the stored state until ``phase`` holds; ``False`` when the process ended (or time ran out) first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if phase():
                return True
            if self.process.poll() is not None:
                return phase()
            time.sleep(0.02)
        return False

    def kill(self) -> str:
        """``kill -9`` the command's own process, then what it left running (its Ray cluster); its stderr."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)
        time.sleep(0.5)
        self._end_session()
        self.handle.close()
        return self.log.read_text()

    def finish(self, timeout: float = 900) -> tuple[int, str]:
        """Wait for the command to end; its exit status and stderr."""
        code = self.process.wait(timeout=timeout)
        self.handle.close()
        self._end_session()
        return code, self.log.read_text()

    def _end_session(self) -> None:
        """Kill every process of the command's session (Ray's workers lead process groups of their own)."""
        listing = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
        for pid, sid in (line.split() for line in listing.splitlines()):
            if int(sid) == self.process.pid:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def run(args: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command to its end (the resume)."""
    return Process(args, log, env).finish()


def config_key(trial: dict) -> str:
    return json.dumps(json.loads(trial["config"]), sort_keys=True) if trial["config"] else ""


def check_resumed(runs: Path, study: str, target: int, before: list[dict], outputs: list[str], code: int) -> None:
    """What a resumed search promises, added to the tally before anything is asserted.

    Args:
        runs: the runs folder.
        study: the study.
        target: the trials it should hold.
        before: the trials as stored right after the kill.
        outputs: every run's stderr (killed and resumed).
        code: the resumed run's exit status.
    """
    after = trials(runs, study)
    by_number = {t["number"]: t for t in after}
    finished_before = [t for t in before if t["state"] in DONE]
    lost = sum(1 for t in finished_before if by_number.get(t["number"], {}).get("values") != t["values"])
    lost += sum(1 for t in finished_before if by_number.get(t["number"], {}).get("state") != t["state"])
    done = [t for t in after if t["state"] in DONE]
    keys = [config_key(t) for t in done]
    own_failures = {config_key(t) for t in after if t["state"] == "FAIL" and '"withdrawn"' not in t["attrs"]
                    and "fail_reason" in t["attrs"]}  # fmt: skip
    duplicated = len(keys) - len(set(keys)) + sum(1 for k in keys if k in own_failures)
    errors = sum(("internal error" in out) + ("Traceback" in out) for out in outputs)
    running = [t for t in after if t["state"] == "RUNNING"]
    parents = query(runs / "mlflow.db", "SELECT count(*) FROM tags WHERE key = 'autopeft.role' AND value = 'parent'")
    open_runs = query(
        runs / "mlflow.db", "SELECT count(*) FROM runs WHERE status = 'RUNNING' AND lifecycle_stage = 'active'"
    )
    logged = query(runs / "mlflow.db", "SELECT t.value FROM tags t JOIN runs r USING (run_uuid) WHERE t.key = "
                   "'autopeft.trial' AND r.lifecycle_stage = 'active' AND t.run_uuid IN (SELECT run_uuid FROM tags "
                   "WHERE key = 'autopeft.role' AND value = 'trial')")  # fmt: skip
    logged = [int(v) for (v,) in logged]
    clean = (code == 0 and not lost and not duplicated and not errors and len(done) == target and not running
             and parents == [(1,)] and len(logged) == len(set(logged)) and open_runs == [(0,)])  # fmt: skip
    TALLY["faults"] += 1
    TALLY["resumed_clean"] += int(clean)
    TALLY["lost"] += lost
    TALLY["duplicated"] += duplicated
    TALLY["internal_errors"] += errors
    assert code == 0, outputs[-1][-3000:]
    assert not errors, [out[-2000:] for out in outputs if "internal error" in out or "Traceback" in out]
    assert not lost and not duplicated, (lost, duplicated)
    assert len(done) == target and not running, (len(done), target, running)
    assert parents == [(1,)], parents
    assert len(logged) == len(set(logged)) and set(logged) >= {t["number"] for t in done}, logged
    assert open_runs == [(0,)], "an MLflow run was left RUNNING"
