"""Our multi-objective BO sampler against Optuna's Random, TPE, NSGA-II and GPSampler, side by side.

Problems, all on the 45-dimension ``lora`` space of the default MiniLM backbone (per-layer module
switches, per-layer ranks, alpha, dropout, learning rate) under a 0.5% budget, every proposal of
every sampler kept within the budget:

- ``peft``: a PEFT-shaped response (diminishing returns in trainable parameters, module and layer
  preferences, a learning-rate optimum, a little noise) against the exact trainable fraction,
  which our sampler knows before "training", as in a real search;
- ``zdt1`` / ``zdt2``: BoTorch's standard test problems (convex and non-convex fronts) evaluated on
  the space's [0, 1]^45 encoding, continuous dimensions first so that ZDT's position variable is
  continuous (both objectives unknown: our sampler models both). DTLZ problems are left out: their
  distance term, sum (x_i - 0.5)^2, cannot come near zero on on/off switches, so no proposal of any
  sampler reaches their reference point.

Prints, per problem and sampler, the median and p90 seconds of one suggestion in trials 1-10,
20-30 and 40-50, and the mean hypervolume after 10, 20 and 40 trials; last, one line
``suggest_s_ours=<s> suggest_s_gp=<s> speedup=<x> hv_ratio_vs_best_peer=<r>`` (suggestion times
at trials 40-50 on ``peft``; the hypervolume ratio is the worst over problems).

    python bench/bo_bench.py            # 5 seeds, peft + zdt1 + zdt2, 50 trials (long: GPSampler is slow)
    python bench/bo_bench.py --quick    # 1 seed, peft only (under 10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from optuna.distributions import FloatDistribution  # noqa: E402

from autopeft.models import backbone_info, default_model  # noqa: E402
from autopeft.samplers import budget_fraction, create_sampler  # noqa: E402
from autopeft.space import SearchSpace  # noqa: E402

SAMPLERS = ["botorch", "random", "tpe", "nsga2", "gp"]
WINDOWS = [(1, 10), (20, 30), (40, 50)]
HV_AT = [10, 20, 40]
MODULE_VALUE = {"query": 0.6, "key": 0.3, "value": 1.0, "attn_out": 0.7, "ffn_in": 0.8, "ffn_out": 0.9}


class Problem:
    """A benchmark problem: study directions, objective values and a hypervolume reference point."""

    def __init__(self, name: str, space: SearchSpace, limit: int) -> None:
        self.name, self.space, self.limit = name, space, limit
        if name == "peft":
            self.directions = ["maximize", "minimize"]
            self.known = {1: budget_fraction(space, limit)}
            self.ref = torch.tensor([0.40, -1.0], dtype=torch.double)  # in "larger is better" terms
        else:
            from botorch.test_functions.multi_objective import ZDT1, ZDT2

            dim = len(space.dimensions)
            self.function = {"zdt1": ZDT1, "zdt2": ZDT2}[name](dim=dim)
            continuous = [i for i, d in enumerate(space.dimensions.values()) if isinstance(d, FloatDistribution)]
            self.order = continuous + [i for i in range(dim) if i not in continuous]
            self.directions = ["minimize", "minimize"]
            self.known = {}
            self.ref = -torch.as_tensor(self.function._ref_point, dtype=torch.double)

    def evaluate(self, params: dict, rng: np.random.Generator) -> list[float]:
        if self.name != "peft":
            x = torch.as_tensor(self.space.to_unit(params)[self.order], dtype=torch.double).unsqueeze(0)
            return self.function(x).squeeze(0).tolist()
        config = self.space.decode(params)
        count = self.space.count(config)
        plan = config.methods["lora"]
        layers = self.space.info.num_layers
        capacity = math.log1p(count / 2000) / math.log1p(self.limit / 2000)
        placement = statistics.fmean(
            MODULE_VALUE[module] * (0.5 + 0.5 * (layer + 1) / layers) for layer, module, _ in plan["targets"]
        )
        lr = config.training["learning_rate"]
        mean_rank = statistics.fmean(rank for _, _, rank in plan["targets"])
        penalty = (
            0.08 * (math.log10(lr) - math.log10(1.5e-3)) ** 2 + 0.01 * (math.log2(plan["alpha"] / mean_rank) - 1) ** 2
        )
        metric = 0.5 + 0.35 * capacity * placement - penalty + rng.normal(0, 0.005)
        return [metric, count / self.limit]

    def hypervolume(self, values: list[list[float]]) -> float:
        from botorch.utils.multi_objective.hypervolume import Hypervolume
        from botorch.utils.multi_objective.pareto import is_non_dominated

        if not values:
            return 0.0
        signs = torch.tensor([1.0 if d == "maximize" else -1.0 for d in self.directions], dtype=torch.double)
        y = torch.tensor(values, dtype=torch.double) * signs
        y = y[(y > self.ref).all(dim=-1)]
        if len(y) == 0:
            return 0.0
        return float(Hypervolume(self.ref).compute(y[is_non_dominated(y)]))


def run(problem: Problem, sampler_name: str, seed: int, trials: int) -> tuple[list[float], list[float]]:
    """Suggestion seconds of each trial, and the hypervolume after each trial."""
    sampler = create_sampler(sampler_name, problem.space, problem.limit, seed, problem.known)
    study = optuna.create_study(directions=problem.directions, sampler=sampler)
    rng = np.random.default_rng(seed)
    seconds, values, hv = [], [], []
    for _ in range(trials):
        started = time.perf_counter()
        trial = study.ask(dict(problem.space.dimensions))
        seconds.append(time.perf_counter() - started)
        assert problem.space.is_feasible(trial.params, problem.limit), "a proposal broke the budget"
        values.append(problem.evaluate(trial.params, rng))
        study.tell(trial, values[-1])
        hv.append(problem.hypervolume(values))
    return seconds, hv


def window_stats(seconds_by_seed: list[list[float]], low: int, high: int) -> tuple[float, float]:
    pooled = [s for run in seconds_by_seed for s in run[low - 1 : high]]
    if not pooled:
        return math.nan, math.nan
    return float(np.median(pooled)), float(np.percentile(pooled, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, the peft problem only")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--problems", default="peft,zdt1,zdt2")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.problems = 1, "peft"
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    info = backbone_info(default_model(), 2)
    space = SearchSpace.load("lora", info)
    limit = int(0.005 * info.backbone_params)
    samplers = args.samplers.split(",")
    print(f"space 'lora' on all-MiniLM-L6-v2: {len(space.dimensions)} dimensions; budget {limit:,} parameters; "
          f"{args.trials} trials x {args.seeds} seeds; one torch thread")  # fmt: skip
    results: dict[tuple[str, str], tuple[list, list]] = {}
    for problem_name in args.problems.split(","):
        problem = Problem(problem_name, space, limit)
        for name in samplers:
            started = time.perf_counter()
            runs = [run(problem, name, seed, args.trials) for seed in range(args.seeds)]
            results[(problem_name, name)] = ([r[0] for r in runs], [r[1] for r in runs])
            print(f"  {problem_name:6s} {name:8s} done in {time.perf_counter() - started:6.1f} s", flush=True)

    header = f"{'problem':7s} {'sampler':8s} " + " ".join(f"t{a}-{b} med/p90 s".rjust(17) for a, b in WINDOWS)
    header += " " + " ".join(f"HV@{n}".rjust(8) for n in HV_AT)
    print("\n" + header)
    hv40: dict[tuple[str, str], float] = {}
    for (problem_name, name), (seconds, hvs) in results.items():
        cells = []
        for low, high in WINDOWS:
            median, p90 = window_stats(seconds, low, high)
            cells.append(f"{median:7.3f}/{p90:7.3f}".rjust(17))
        hv_cells = []
        for n in HV_AT:
            mean_hv = float(np.mean([hv[min(n, len(hv)) - 1] for hv in hvs]))
            hv_cells.append(f"{mean_hv:8.4f}")
            if n == 40:
                hv40[(problem_name, name)] = mean_hv
        print(f"{problem_name:7s} {name:8s} " + " ".join(cells) + " " + " ".join(hv_cells))

    ratios = []
    for problem_name in args.problems.split(","):
        peers = [hv40[(problem_name, n)] for n in samplers if n != "botorch" and (problem_name, n) in hv40]
        if peers and (problem_name, "botorch") in hv40:
            ratios.append(hv40[(problem_name, "botorch")] / max(max(peers), 1e-12))
    timing_problem = "peft" if "peft" in args.problems.split(",") else args.problems.split(",")[0]
    ours = window_stats(results[(timing_problem, "botorch")][0], 40, 50)[0] if "botorch" in samplers else math.nan
    gp = window_stats(results[(timing_problem, "gp")][0], 40, 50)[0] if "gp" in samplers else math.nan
    ratio = min(ratios) if ratios else math.nan
    print(f"suggest_s_ours={ours:.3f} suggest_s_gp={gp:.3f} speedup={gp / ours:.1f} hv_ratio_vs_best_peer={ratio:.3f}")


if __name__ == "__main__":
    main()
