"""What a small search spends around its trials: a first search (empty user cache) against a later one.

A new runs folder's MLflow store used to be made by MLflow's 50-odd schema migrations, and the driver
inspected the backbone (importing its modelling code and building it on the ``meta`` device) on every run.
Both are now kept in the user cache (:func:`autopeft.runs_dir.user_cache_dir`): a migrated empty store per
MLflow version and each backbone's facts. This bench runs the user's command, ``autopeft search`` in a fresh
process, on a tiny random BERT and 64 examples of RTE (so the trials are a few seconds and the rest is
start-up and bookkeeping), alternating an empty cache (what every search paid before) and a warm one, each
in a new runs folder, and prints each run's wall time and the driver's CPU seconds. A whole search varies by
more than the parts save when other work shares the machine, so it also times the two parts alone, each in a
fresh process, alternating cold and warm: opening the tracker on a new runs folder (:class:`Tracker`, as a
search does) and :func:`backbone_info`. Then the medians::

    python bench/search_startup.py --data-dir ../shared/data/glue [--repeats 3]

The last line is ``store_s_cold=.. store_s_warm=.. backbone_s_cold=.. backbone_s_warm=.. wall_s_cold=..
wall_s_warm=.. speedup=..`` (seconds of wall time; ``speedup`` is the whole search's).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from long_search import tiny_model, tiny_search_argv  # the tests' tiny model, built as long_search.py builds it


def one_search(model: str, data_dir: str, runs: Path, cache: Path) -> tuple[float, float]:
    """Wall seconds and the driver's CPU seconds of ``autopeft search`` with the user cache at ``cache``."""
    args = tiny_search_argv(model, data_dir, runs, "startup", 3)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "autopeft.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "AUTOPEFT_CACHE_DIR": str(cache)},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"search failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def time_parts(model: str, runs: Path) -> None:
    """Print the wall seconds of a new runs folder's tracker and of the backbone's facts, in this process."""
    from autopeft.models import backbone_info
    from autopeft.tracking.mlflow import Tracker

    start = time.perf_counter()
    Tracker(f"sqlite:///{runs}/mlflow.db", "startup", runs / "mlartifacts", {"bench": True})
    opened = time.perf_counter()
    backbone_info(model, 2)
    print(f"{opened - start:.3f} {time.perf_counter() - opened:.3f}")


def parts(model: str, runs: Path, cache: Path) -> tuple[float, float]:
    """:func:`time_parts` in a fresh process with the user cache at ``cache``."""
    done = subprocess.run(
        [sys.executable, __file__, "--parts", model, str(runs)],
        capture_output=True,
        text=True,
        env={**os.environ, "AUTOPEFT_CACHE_DIR": str(cache)},
        check=True,
    )
    store, backbone = done.stdout.split()[-2:]
    return float(store), float(backbone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", nargs=2, metavar=("MODEL", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parts:
        return time_parts(args.parts[0], Path(args.parts[1]))
    if not args.data_dir:
        parser.error("--data-dir is required")
    with tempfile.TemporaryDirectory(prefix="startup-") as scratch:
        root = Path(scratch)
        model = tiny_model(root / "tiny")
        warm_cache = root / "warm-cache"
        one_search(model, args.data_dir, root / "runs-fill", warm_cache)  # fills the warm cache
        timed: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
        print(f"{'run':>6} {'cache':>6} {'new store s':>12} {'backbone s':>11}")
        for repeat in range(2 * args.repeats + 1):
            for kind in timed:
                cache = root / f"parts-cold-{repeat}" if kind == "cold" else warm_cache
                timed[kind].append(parts(model, root / f"parts-{kind}-{repeat}", cache))
                print(f"{repeat:>6} {kind:>6} {timed[kind][-1][0]:>12.2f} {timed[kind][-1][1]:>11.2f}", flush=True)
        rows: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
        print(f"{'run':>6} {'cache':>6} {'wall s':>8} {'driver cpu s':>13}")
        for repeat in range(args.repeats):
            for kind in rows:
                cache = root / f"cold-cache-{repeat}" if kind == "cold" else warm_cache
                wall, cpu = one_search(model, args.data_dir, root / f"runs-{kind}-{repeat}", cache)
                rows[kind].append((wall, cpu))
                print(f"{repeat:>6} {kind:>6} {wall:>8.1f} {cpu:>13.1f}", flush=True)
    wall = {kind: statistics.median(w for w, _ in runs) for kind, runs in rows.items()}
    cpu = {kind: statistics.median(c for _, c in runs) for kind, runs in rows.items()}
    store = {kind: statistics.median(s for s, _ in runs) for kind, runs in timed.items()}
    backbone = {kind: statistics.median(b for _, b in runs) for kind, runs in timed.items()}
    print(f"medians: driver CPU s cold {cpu['cold']:.1f}, warm {cpu['warm']:.1f}")
    print(
        f"store_s_cold={store['cold']:.2f} store_s_warm={store['warm']:.2f} backbone_s_cold={backbone['cold']:.2f} "
        f"backbone_s_warm={backbone['warm']:.2f} wall_s_cold={wall['cold']:.1f} wall_s_warm={wall['warm']:.1f} "
        f"speedup={wall['cold'] / wall['warm']:.2f}"
    )


if __name__ == "__main__":
    main()
