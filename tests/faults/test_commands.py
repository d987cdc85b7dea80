"""``kill -9`` of ``retrain`` and ``baselines`` mid-seed, and of a trial's worker: the rerun trains only what is
missing; a dead worker fails its trial with the reason and the search goes on, its traceback in Ray's log."""

from __future__ import annotations

import json
import random
import subprocess

import pytest
from faults.harness import STUDY, TARGET, Process, query, run, search_args, trials
from faults.tally import TALLY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_model, data_dir):
    runs = tmp_path_factory.mktemp("runs")
    code, err = run(search_args(tiny_model, data_dir, runs), runs / "search.err")
    assert code == 0, err[-3000:]
    return runs


def common(runs, data_dir) -> list[str]:
    return ["--runs-dir", str(runs), "--data-dir", data_dir, "--epochs", "1", "--max-train-samples", "1024",
            "--max-eval-samples", "64", "--seeds", "3"]  # fmt: skip


def tally(clean: bool, lost: int, duplicated: int, outputs: list[str]) -> None:
    TALLY["faults"] += 1
    TALLY["resumed_clean"] += int(clean)
    TALLY["lost"] += lost
    TALLY["duplicated"] += duplicated
    TALLY["internal_errors"] += sum(("internal error" in out) + ("Traceback" in out) for out in outputs)


@pytest.mark.parametrize("seed", [0])
def test_retrain_killed_mid_seed_completes_only_the_missing_seeds(seed, searched, data_dir, tmp_path):
    done_before = random.Random(f"retrain-{seed}").randint(1, 2)
    args = ["retrain", "--study", STUDY, "--pick", "knee", *common(searched, data_dir)]
    key = None

    def stored() -> list[dict]:
        nonlocal key
        found = query(searched / "optuna.db", "SELECT a.key, a.value_json FROM study_user_attributes a JOIN studies "
                      "s USING (study_id) WHERE s.study_name = ? AND a.key LIKE 'autopeft.retrain.%'", STUDY)  # fmt: skip
        if found:
            key = found[0][0]
        return json.loads(found[0][1]) if found else []

    killed = Process(args, tmp_path / "killed.err")
    hit = killed.wait_for(lambda: len(stored()) == done_before)
    first = killed.kill()
    assert hit, first[-2000:]
    before = stored()
    code, again = run(args, tmp_path / "again.err")
    after = stored()
    seeds = [r["seed"] for r in after]
    lost = sum(1 for r in before if r not in after)
    duplicated = len(seeds) - len(set(seeds))
    tally(code == 0 and not lost and not duplicated and sorted(seeds) == [0, 1, 2], lost, duplicated, [first, again])
    assert code == 0, again[-3000:]
    assert after[: len(before)] == before and sorted(seeds) == [0, 1, 2], (before, after)
    missing = 3 - len(before)  # off a terminal, one line per run, counting only what this command trains
    lines = [line for line in again.splitlines() if line.startswith("retraining: ")]
    assert [line.split(" runs done")[0] for line in lines] == [
        f"retraining: {k}/{missing}" for k in range(1, 1 + missing)
    ]
    assert lines[-1].endswith("about 0:00:00 left"), lines


@pytest.mark.parametrize("seed", [0])
def test_baselines_killed_mid_seed_complete_only_the_missing_seeds(seed, searched, data_dir, tiny_model, tmp_path):
    done_before = random.Random(f"baselines-{seed}").randint(1, 2)
    args = ["baselines", "--study", STUDY, "--only", "lora,pfeiffer", *common(searched, data_dir)]

    def stored() -> list[tuple]:
        return query(searched / "optuna.db", "SELECT t.number, a.value_json FROM trials t JOIN studies s USING "
                     "(study_id) JOIN trial_user_attributes a USING (trial_id) WHERE s.study_name LIKE '%-baselines' "
                     "AND t.state = 'COMPLETE' AND a.key = 'seed'")  # fmt: skip

    killed = Process(args, tmp_path / "killed.err")
    hit = killed.wait_for(lambda: len(stored()) == done_before)
    first = killed.kill()
    assert hit, first[-2000:]
    before = stored()
    code, again = run(args, tmp_path / "again.err")
    after = stored()
    runs = query(searched / "optuna.db", "SELECT b.value_json, s.value_json FROM trials t JOIN studies st USING "
                 "(study_id) JOIN trial_user_attributes b ON b.trial_id = t.trial_id AND b.key = 'baseline' JOIN "
                 "trial_user_attributes s ON s.trial_id = t.trial_id AND s.key = 'seed' WHERE st.study_name LIKE "
                 "'%-baselines' AND t.state = 'COMPLETE'")  # fmt: skip
    lost = sum(1 for row in before if row not in after)
    duplicated = len(runs) - len(set(runs))
    tally(code == 0 and not lost and not duplicated and len(runs) == 6, lost, duplicated, [first, again])
    assert code == 0, again[-3000:]
    assert not lost and not duplicated and len(runs) == 6, runs  # two baselines x three seeds, each once
    missing = 6 - len(before)
    lines = [line for line in again.splitlines() if line.startswith("baselines: ")]
    assert [line.split(" runs done")[0] for line in lines] == [
        f"baselines: {k}/{missing}" for k in range(1, 1 + missing)
    ]


def worker_pids(session: int) -> list[int]:
    """The Ray workers of a command's session that run a Tune trial (each worker leads a process group of its own)."""
    listing = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    return [int(p) for p, g, *rest in (line.split(None, 2) for line in listing.splitlines())
            if int(g) == session and rest and rest[0].startswith("ray::ImplicitFunc")]  # fmt: skip


def test_a_killed_worker_fails_its_trial_with_the_reason_and_the_search_goes_on(tmp_path, tiny_model, data_dir):
    import os
    import signal

    runs = tmp_path / "runs"
    args = search_args(tiny_model, data_dir, runs, samples=2048)
    search = Process(args, tmp_path / "search.err")

    def training() -> bool:
        return any(t["state"] == "RUNNING" and t["config"] for t in trials(runs, STUDY)) and bool(
            worker_pids(search.process.pid)
        )

    hit = search.wait_for(training)
    if hit:
        os.kill(worker_pids(search.process.pid)[0], signal.SIGKILL)  # as the kernel's OOM killer does
    code, err = search.finish()
    assert hit, err[-2000:]
    stored = trials(runs, STUDY)
    quo = query(runs / "optuna.db", "SELECT t.state FROM trials t JOIN studies s USING (study_id) WHERE "
                "s.study_name = ?", f"{STUDY}.status-quo")  # fmt: skip
    failed = [t for t in stored if t["state"] == "FAIL"]
    done = [t for t in stored if t["state"] in ("COMPLETE", "PRUNED")]
    died = [t for t in failed if "worker process" in t["attrs"].get("fail_reason", "")]
    text = " ".join(err.split())
    tally(code == 0 and len(done) == TARGET and "Traceback" not in err, 0, 0, [err])
    assert code == 0 and len(done) == TARGET, err[-3000:]
    assert died or ("status quo" in text and "failed: the worker process running it died" in text), (stored, quo)
    assert "Traceback" not in err and "ActorDiedError" not in err and "tune_controller" not in err  # one line
    logs = list((runs / "logs" / STUDY).glob("ray-*.log"))
    assert len(logs) == 1 and "worker process has died" in logs[0].read_text()  # Ray's own lines, in its log
