"""Proxy trials per hour on one GPU with 1, 2, 4 and 8 trials sharing it (bf16 autocast).

Each of N processes (as Ray packs N trials with ``--gpus-per-trial 1/N``) runs the same proxy
trial twice: the first pays CUDA start-up and the model load (as a fresh Ray worker does), the
second is the steady state of a reused worker. Prints a table and, last, one line
``trials_per_hour_1=<x> trials_per_hour_best=<x> best_concurrency=<n>``.

    python bench/gpu_trials.py --model DIR --data-dir GLUE_DIR [--concurrency 1,2,4,8]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time


def _worker(args: tuple) -> list[dict]:
    model, data_dir, config, settings, seed, repeats = args
    from autopeft.training import ProxyRequest, run_proxy_trial

    results = []
    for k in range(repeats):
        started = time.perf_counter()
        request = ProxyRequest(model, "rte", data_dir, config, settings, seed=seed + k, threads=1, cache_dir=None)
        result = run_proxy_trial(request)
        result["wall"] = time.perf_counter() - started
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--max-train-samples", type=int, default=2048)
    parser.add_argument("--epochs", type=float, default=1.0)
    args = parser.parse_args()

    import numpy as np
    import torch

    from autopeft.models import backbone_info
    from autopeft.space import SearchSpace
    from autopeft.training import ProxySettings

    info = backbone_info(args.model, 2)
    space = SearchSpace.load("default", info)
    params = space.repair(space.sample(np.random.default_rng(0)), int(0.005 * info.backbone_params))
    config = space.decode(params).to_dict()
    settings = ProxySettings(epochs=args.epochs, max_train_samples=args.max_train_samples)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"device: {device}; torch {torch.__version__}; RTE, {args.max_train_samples} examples x {args.epochs} epoch, "
          f"{space.count_params(params):,} trainable parameters")  # fmt: skip
    print(
        f"{'trials/GPU':>10} {'wall s':>8} {'first s':>8} {'steady s':>9} {'trials/h':>9} {'steady/h':>9} {'metric':>7}"
    )
    rates = {}
    context = mp.get_context("spawn")
    for n in [int(x) for x in args.concurrency.split(",")]:
        started = time.perf_counter()
        with context.Pool(n) as pool:
            runs = pool.map(_worker, [(args.model, args.data_dir, config, settings, 100 * i, 2) for i in range(n)])
        wall = time.perf_counter() - started
        first = float(np.mean([r[0]["wall"] for r in runs]))
        steady = float(np.mean([r[1]["wall"] for r in runs]))
        metric = float(np.mean([r[1]["metric"] for r in runs]))
        rates[n] = 3600 * n / steady
        print(
            f"{n:>10} {wall:8.1f} {first:8.1f} {steady:9.1f} {3600 * 2 * n / wall:9.0f} {rates[n]:9.0f} {metric:7.3f}",
            flush=True,
        )
    best = max(rates, key=rates.get)
    single = rates.get(1, float("nan"))
    print(f"trials_per_hour_1={single:.0f} trials_per_hour_best={rates[best]:.0f} best_concurrency={best}")


if __name__ == "__main__":
    main()
