"""A small search, this tree against another checkout of autopeft, side by side: wall time, the machine's busy
core-seconds, and the confirmations' phase.

Runs the user's command, ``autopeft search`` in a fresh process, on a tiny random BERT and 64 examples of RTE
(so the trials take a few seconds and the rest is start-up, Ray, confirmations and bookkeeping), alternating
the two arms, each in a new runs folder with the same warm user cache. Each arm runs in its own tree, this one
or ``--baseline-tree`` (a ``git worktree`` of the commit to compare with): the command starts there (``python
-m`` puts the current folder first on the path) with the tree on ``PYTHONPATH`` too (Ray's workers inherit
it). Per run it prints:

- ``wall s``: the command's wall time;
- ``busy core-s``: CPU time of the whole machine over the run, from ``/proc/stat`` (the driver's own rusage
  misses Ray's processes, which the raylet starts); run it on a quiet machine;
- ``confirm s``: from the last trial's line to the last confirmation's line on the console.

Then the medians, and last ``wall_s_base=.. wall_s_new=.. core_s_base=.. core_s_new=.. confirm_s_base=..
confirm_s_new=.. core_ratio=..`` (``core_ratio``: the new arm's busy core-seconds over the baseline's)::

    git worktree add --detach /tmp/autopeft-base <commit>
    python bench/search_ab.py --baseline-tree /tmp/autopeft-base --data-dir ../shared/data/glue [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from long_search import tiny_model, tiny_search_argv  # the tests' tiny model, built as long_search.py builds it

TRIAL_LINE = re.compile(r"\btrial \d+ (finished|stopped) ")
CONFIRMED_LINE = re.compile(r"\bconfirmed (trial \d+|the status quo) ")
"""The console's lines of a trial's end and of a confirmation's (a progress bar may precede them on a line)."""


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def arm_env(tree: Path) -> dict[str, str]:
    """The environment of a command run from the checkout ``tree``, checked to import autopeft from there."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (tree, env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "200"  # one console line per event
    where = subprocess.run(
        [sys.executable, "-c", "import autopeft; print(autopeft.__file__)"], capture_output=True, text=True, env=env,
        cwd=tree, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(where).resolve().is_relative_to(tree):
        raise SystemExit(f"{tree}: autopeft is imported from {where} there, not from the tree")
    return env


def one_search(model: str, data_dir: str, runs: Path, tree: Path) -> dict[str, float]:
    """Wall seconds, busy core-seconds and the confirmations' seconds of one ``autopeft search`` run from the
    autopeft checkout ``tree``."""
    args = tiny_search_argv(model, data_dir, runs, "ab", 4)
    env = arm_env(tree)
    busy0, total0 = busy_jiffies()
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "autopeft.cli", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=env, cwd=tree,
    )  # fmt: skip
    last_trial = last_confirmation = None
    tail = []
    for line in process.stderr:
        now = time.perf_counter()
        tail = [*tail[-20:], line]
        if TRIAL_LINE.search(line):
            last_trial = now
        elif CONFIRMED_LINE.search(line):
            last_confirmation = now
    code = process.wait()
    wall = time.perf_counter() - start
    busy1, total1 = busy_jiffies()
    if code != 0:
        raise SystemExit(f"search failed ({code}): {''.join(tail[-3:]).strip()}")
    cores = os.cpu_count() or 1
    confirm = (last_confirmation - last_trial) if last_trial and last_confirmation else float("nan")
    return {"wall": wall, "core": wall * cores * (busy1 - busy0) / max(1, total1 - total0), "confirm": confirm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", required=True, help="a checkout of the autopeft commit to compare with")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base, here = Path(args.baseline_tree).resolve(), Path(__file__).resolve().parents[1]
    data_dir = str(Path(args.data_dir).resolve())
    if not (base / "autopeft" / "__init__.py").is_file():
        raise SystemExit(f"--baseline-tree {base}: no autopeft package there")
    with tempfile.TemporaryDirectory() as scratch:
        model = tiny_model(Path(scratch) / "model")
        one_search(model, data_dir, Path(scratch) / "warm-up", here)  # the user cache, warm for both arms
        arms: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
        print("| run | arm | wall s | busy core-s | confirm s |")
        print("|---|---|---|---|---|")
        for repeat in range(args.repeats):
            for arm in ("base", "new"):
                runs = Path(scratch) / f"{arm}-{repeat}"
                figures = one_search(model, data_dir, runs, base if arm == "base" else here)
                arms[arm].append(figures)
                cells = " | ".join(f"{figures[key]:.1f}" for key in ("wall", "core", "confirm"))
                print(f"| {repeat + 1} | {arm} | {cells} |")
    med = {
        arm: {k: statistics.median(r[k] for r in rows) for k in ("wall", "core", "confirm")}
        for arm, rows in arms.items()
    }
    print(
        f"wall_s_base={med['base']['wall']:.1f} wall_s_new={med['new']['wall']:.1f} "
        f"core_s_base={med['base']['core']:.1f} core_s_new={med['new']['core']:.1f} "
        f"confirm_s_base={med['base']['confirm']:.1f} confirm_s_new={med['new']['confirm']:.1f} "
        f"core_ratio={med['new']['core'] / med['base']['core']:.2f}"
    )


if __name__ == "__main__":
    main()
