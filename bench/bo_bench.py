"""Our multi-objective BO sampler against Optuna's Random, TPE, NSGA-II and GPSampler, side by side, on the
path a real search runs.

Every run opens a real study from a :class:`StudySpec` (SQLite storage in a temporary folder), gets
its sampler from ``BoundStudy.create_sampler`` as ``run_search`` does, and asks, starts and finishes
each trial with ``autopeft.execution.trials``, the functions the Ray Tune searcher calls. Only the
training is replaced, by a synthetic response; the objective values the study stores are computed by
the study itself (the parameter axis is the exact trainable fraction of the backbone, as in every
real search). After each trial the bench checks that the value the sampler assumes for each exact
objective equals the value the study stored, and it counts proposals that fell back to random values.

Problems, all on the 45-dimension ``lora`` space of the default MiniLM backbone (per-layer module
switches, per-layer ranks, alpha, dropout, learning rate) under a 0.5% budget, every proposal of
every sampler kept within the budget:

- ``peft`` (objectives ``metric,params``): a PEFT-shaped response (diminishing returns in trainable
  parameters, module and layer preferences, a learning-rate optimum, a little noise);
- ``zdt1`` / ``zdt2`` (objectives ``metric,neg_loss``, both measured, so our sampler models both):
  BoTorch's standard test problems (convex and non-convex fronts) evaluated on the space's [0, 1]^45
  encoding, continuous dimensions first so that ZDT's position variable is continuous; the response
  reports ``metric = -f1`` and ``neg_loss = -f2``. DTLZ problems are left out: their distance term,
  sum (x_i - 0.5)^2, cannot come near zero on on/off switches, so no proposal of any sampler
  reaches their reference point.

Prints, per problem and sampler, the median and p90 seconds of one suggestion (``ask``) in trials
1-10, 20-30 and 40-50, the mean hypervolume after 10, 20 and 40 trials (``autopeft.pareto.hypervolume``
in the study's units: for ``peft`` the reference point is metric 0.40 and the budget's fraction) and
the fallbacks; last, one line ``suggest_s_ours=<s> suggest_s_gp=<s> speedup=<x> hv_ratio_vs_best_peer=<r>``
(suggestion times at trials 40-50 on ``peft``; the hypervolume ratio is the worst over problems).

    python bench/bo_bench.py            # 5 seeds, peft + zdt1 + zdt2, 50 trials (long: GPSampler is slow)
    python bench/bo_bench.py --quick    # 1 seed, peft only (under 10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from optuna.distributions import FloatDistribution  # noqa: E402

from autopeft.execution import trials as study_trials  # noqa: E402
from autopeft.methods.config import TrialConfig  # noqa: E402
from autopeft.models import default_model  # noqa: E402
from autopeft.pareto import hypervolume  # noqa: E402
from autopeft.study import BoundStudy, StudySpec, open_study  # noqa: E402

SAMPLERS = ["botorch", "random", "tpe", "nsga2", "gp"]
WINDOWS = [(1, 10), (20, 30), (40, 50)]
HV_AT = [10, 20, 40]
MODULE_VALUE = {"query": 0.6, "key": 0.3, "value": 1.0, "attn_out": 0.7, "ffn_in": 0.8, "ffn_out": 0.9}


BUDGET = "0.5%"


class Problem:
    """A benchmark problem: the study's objectives, a synthetic training response and a reference point.

    Args:
        name: ``peft``, ``zdt1`` or ``zdt2``.
        bound: a study of this problem (for its space and budget).
    """

    def __init__(self, name: str, bound: BoundStudy) -> None:
        self.name, self.space, self.limit = name, bound.space, bound.limit
        if name == "peft":
            self.ref = [0.40, bound.info.fraction(bound.limit)]  # metric from 0.40, params up to the budget
        else:
            from botorch.test_functions.multi_objective import ZDT1, ZDT2

            dim = len(self.space.dimensions)
            self.function = {"zdt1": ZDT1, "zdt2": ZDT2}[name](dim=dim)
            continuous = [i for i, d in enumerate(self.space.dimensions.values()) if isinstance(d, FloatDistribution)]
            self.order = continuous + [i for i in range(dim) if i not in continuous]
            self.ref = [-float(r) for r in self.function._ref_point]  # metric = -f1, neg_loss = -f2

    @staticmethod
    def objectives(name: str) -> str:
        """The study's ``--objectives`` for a problem."""
        return "metric,params" if name == "peft" else "metric,neg_loss"

    def train(self, params: dict, config: TrialConfig, rng: np.random.Generator) -> dict:
        """The synthetic stand-in for a proxy training: a result as ``run_proxy_trial`` returns it."""
        if self.name != "peft":
            x = torch.as_tensor(self.space.to_unit(params)[self.order], dtype=torch.double).unsqueeze(0)
            f1, f2 = self.function(x).squeeze(0).tolist()
            return {"metric": -f1, "metrics": {"accuracy": -f1, "neg_loss": -f2}}
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
        return {"metric": metric, "metrics": {"accuracy": metric, "neg_loss": metric - 1.0}}


def open_problem_study(problem: str, sampler: str, seed: int, trials: int, folder: str) -> BoundStudy:
    """A fresh study of one run, opened from a spec as ``autopeft search`` opens it, with its sampler."""
    spec = StudySpec.from_dict(
        dict(
            task="rte",
            budget=BUDGET,
            model=default_model(),
            space="lora",
            objectives=Problem.objectives(problem),
            sampler=sampler,
            trials=trials,
            seed=seed,
            data_dir=None,
            runs_dir=folder,
            study=f"{problem}-{sampler}-{seed}",
        )
    )
    bound = open_study(spec)
    bound.study.sampler = bound.create_sampler()
    return bound


def run(problem_name: str, sampler_name: str, seed: int, trials: int, folder: str) -> tuple[list, list, int]:
    """Suggestion seconds of each trial, the hypervolume after each trial, and the fallbacks."""
    bound = open_problem_study(problem_name, sampler_name, seed, trials, folder)
    problem = Problem(problem_name, bound)
    known = bound.known_objectives()
    maximize = [o.direction == "maximize" for o in bound.objectives]
    rng = np.random.default_rng(seed)
    seconds, values, hv, fallbacks = [], [], [], 0
    for _ in range(trials):
        started_at = time.perf_counter()
        trial = study_trials.ask(bound)
        seconds.append(time.perf_counter() - started_at)
        fallbacks += study_trials.fallback_reason(trial) is not None
        started = study_trials.start(bound, trial)
        assert started is not None, "a proposal broke the budget"
        stored = study_trials.finish(bound, started, problem.train(trial.params, started.config, rng))
        assert stored.state == optuna.trial.TrialState.COMPLETE, stored.user_attrs.get("fail_reason")
        for index, objective in known.items():  # the invariant the optimiser depends on
            assumed = objective.value(stored.params)
            assert assumed == stored.values[index], f"sampler assumes {assumed}, study stores {stored.values[index]}"
        values.append(stored.values)
        hv.append(hypervolume(values, maximize, problem.ref))
    return seconds, hv, fallbacks


def window_stats(seconds_by_seed: list[list[float]], low: int, high: int) -> tuple[float, float]:
    pooled = [s for run in seconds_by_seed for s in run[low - 1 : high]]
    if not pooled:
        return math.nan, math.nan
    return float(np.median(pooled)), float(np.percentile(pooled, 90))


def main(argv: Sequence[str] | None = None) -> str:
    """Run the bench; return (and print) its final line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, the peft problem only")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--problems", default="peft,zdt1,zdt2")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.problems = 1, "peft"
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    samplers = args.samplers.split(",")
    folder = tempfile.mkdtemp(prefix="autopeft-bo-bench-")
    space = open_problem_study("peft", samplers[0], 0, args.trials, folder).space
    print(f"space 'lora' on all-MiniLM-L6-v2: {len(space.dimensions)} dimensions; budget {BUDGET}; "
          f"{args.trials} trials x {args.seeds} seeds; one torch thread; studies in {folder}")  # fmt: skip
    results: dict[tuple[str, str], tuple[list, list, int]] = {}
    for problem_name in args.problems.split(","):
        for name in samplers:
            started = time.perf_counter()
            runs = [run(problem_name, name, seed, args.trials, folder) for seed in range(args.seeds)]
            results[(problem_name, name)] = ([r[0] for r in runs], [r[1] for r in runs], sum(r[2] for r in runs))
            print(f"  {problem_name:6s} {name:8s} done in {time.perf_counter() - started:6.1f} s", flush=True)

    header = f"{'problem':7s} {'sampler':8s} " + " ".join(f"t{a}-{b} med/p90 s".rjust(17) for a, b in WINDOWS)
    header += " " + " ".join(f"HV@{n}".rjust(10) for n in HV_AT) + " fallbacks"
    print("\n" + header)
    hv40: dict[tuple[str, str], float] = {}
    for (problem_name, name), (seconds, hvs, fallbacks) in results.items():
        cells = []
        for low, high in WINDOWS:
            median, p90 = window_stats(seconds, low, high)
            cells.append(f"{median:7.3f}/{p90:7.3f}".rjust(17))
        hv_cells = []
        for n in HV_AT:
            mean_hv = float(np.mean([hv[min(n, len(hv)) - 1] for hv in hvs]))
            hv_cells.append(f"{mean_hv:10.4g}")
        hv40[(problem_name, name)] = float(np.mean([hv[min(40, len(hv)) - 1] for hv in hvs]))
        print(f"{problem_name:7s} {name:8s} " + " ".join(cells) + " " + " ".join(hv_cells) + f" {fallbacks:9d}")

    ratios = {}
    for problem_name in args.problems.split(","):
        peers = [hv40[(problem_name, n)] for n in samplers if n != "botorch" and (problem_name, n) in hv40]
        if peers and (problem_name, "botorch") in hv40:
            ratios[problem_name] = hv40[(problem_name, "botorch")] / max(max(peers), 1e-12)
    if ratios:
        print("hypervolume after 40 trials, ours / best peer: " + " ".join(f"{k}={v:.3f}" for k, v in ratios.items()))
    timing_problem = "peft" if "peft" in args.problems.split(",") else args.problems.split(",")[0]
    ours = window_stats(results[(timing_problem, "botorch")][0], 40, 50)[0] if "botorch" in samplers else math.nan
    gp = window_stats(results[(timing_problem, "gp")][0], 40, 50)[0] if "gp" in samplers else math.nan
    ratio = min(ratios.values()) if ratios else math.nan
    line = f"suggest_s_ours={ours:.3f} suggest_s_gp={gp:.3f} speedup={gp / ours:.1f} hv_ratio_vs_best_peer={ratio:.3f}"
    print(line)
    return line


if __name__ == "__main__":
    main(sys.argv[1:])
