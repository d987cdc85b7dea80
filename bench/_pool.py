"""Fixed trainings of a bench in a process pool, each result handed back as it lands, with progress and an ETA.

The benches that train fixed configurations (``methods_table.py``, ``proxy_fidelity.py``) import no Optuna,
Ray or MLflow, so that a GPU machine lent without them runs them; this is their one loop over a
:class:`~concurrent.futures.ProcessPoolExecutor`. The caller stores each result at once (its resumability).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def run_pool(
    jobs: Sequence[Any],
    train: Callable[[Any], Any],
    workers: int,
    on_result: Callable[[Any], str],
) -> None:
    """Run ``train`` over ``jobs`` in ``workers`` processes and print one progress line per finished job.

    Args:
        jobs: picklable job descriptions, one per training.
        train: a module-level function of one job, run in a worker process.
        workers: processes at the same time.
        on_result: called in this process with each result as it lands (store it there); returns the text
            that follows the progress prefix ``[done/all seconds, about N min left]``.
    """
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(train, job) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            text = on_result(future.result())
            elapsed = time.perf_counter() - started
            eta_minutes = elapsed / done * (len(jobs) - done) / 60
            print(f"[{done}/{len(jobs)} {elapsed:6.0f}s, about {eta_minutes:.0f} min left] {text}", flush=True)
