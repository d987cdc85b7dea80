"""Do the rungs of a search rank configurations as full training does? Spearman of each rung's score vs full.

A search trains each configuration on the full schedule (the one ``retrain`` trains: ``full_fidelity()``,
on the train split less the held-out selection part) and scores it on the selection part at rungs,
snapshots of that one run (fractions of its steps). This bench takes ten designed configurations of the
``default`` space that span what a search meets (768 to 74k trainable parameters, one layer to all six,
one module type to all, learning rates 5e-4 to 8e-3), or with ``--sampled`` random ones of ``--space``,
and trains each

- at full fidelity with ``--full-seeds`` seeds, on the whole train split, scored on the validation split,
  as ``retrain`` does: the reference is the mean over those seeds;
- once more as a search trains it (another seed: the reference is independent), scored on the selection
  part at every fraction of :data:`SNAPSHOTS` and at the end,

and prints, per snapshot, the Spearman correlation of its ``neg_loss`` and of its task metric with the
full-training validation metric, and what reaching it costs (its fraction of the schedule). The
correlation between two full-training seeds is printed too: the noise ceiling no rung can beat.

Every finished training is written to ``--out`` (JSON) at once; a rerun skips what is there, so an
interrupted study continues. Trainings run in ``--jobs`` processes with one torch thread each. It
imports no Optuna, Ray or MLflow (a GPU machine lent without them runs it).

    python bench/proxy_fidelity.py --data-dir ../shared/data/glue            # MRPC, the 10 designed configs
    python bench/proxy_fidelity.py --task rte --data-dir ../shared/data/glue # the second task
    python bench/proxy_fidelity.py --quick --data-dir ../shared/data/glue    # 4 configs, 1 epoch (smoke test)

The last line is ``spearman=<rho> rung=<fraction> score=<score>``: the rho of the rung score a search
ranks on by default at the first rung it starts from by default (``defaults.FIRST_RUNG``).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _pool import run_pool  # noqa: E402  (bench/, the script's own folder)
from scipy.stats import spearmanr  # noqa: E402

from autopeft import defaults  # noqa: E402
from autopeft.budget import parse_budget  # noqa: E402
from autopeft.models import backbone_info, default_model  # noqa: E402
from autopeft.tasks import get_task  # noqa: E402
from autopeft.training import ProxyRequest, full_fidelity, run_proxy_trial  # noqa: E402
from autopeft.training.proxy import static_rungs  # noqa: E402

SNAPSHOTS = (1 / 18, 1 / 9, 1 / 6, 2 / 9, 1 / 3, 4 / 9, 2 / 3)
"""Fractions of the full schedule at which the search-like run is scored (its end is the last rung)."""
FULL_SEEDS, RUNG_SEED, SELECTION_SEED = (0, 2), 1, 0
PROXY_REVISION = 4
"""Revision of the trainer the stored results come from (3: scored on the selection split, every fresh
parameter drawn from the run's seed; 4: rungs are snapshots of one full-schedule run). Stored search-like
results of another revision are not read; full-training references of revision 3 on are kept (they
are the ground truth whichever correct trainer produced them)."""


DESIGNED = [  # (layers, {module: rank}, learning rate): capacity from 768 to 74k parameters, lr 5e-4 to 8e-3
    (range(6), {"query": 8, "value": 8}, 1e-3),  # the classic LoRA configuration
    (range(6), {"query": 8, "value": 8}, 5e-4),
    (range(6), {"query": 8, "value": 8}, 5e-3),
    (range(6), dict.fromkeys(("query", "key", "value", "attn_out", "ffn_in", "ffn_out"), 1), 2e-3),
    ((3, 4, 5), {"ffn_in": 4, "ffn_out": 4}, 1e-3),
    ((5,), {"query": 1}, 1e-3),
    ((0, 1), {"value": 2}, 5e-4),
    (range(6), {"query": 4, "key": 4, "value": 4, "attn_out": 4}, 3e-3),
    ((0, 2, 4), {"attn_out": 8, "ffn_out": 8}, 8e-3),
    (range(6), {"value": 16}, 1.5e-3),
]


def designed_configs(space, limit: int) -> list[dict]:
    """The :data:`DESIGNED` configurations as values of the ``default`` space, checked against the budget."""
    configs = []
    for layers, ranks, lr in DESIGNED:
        params = {f"lora.layer.{i}": i in layers for i in range(space.info.num_layers)}
        for module in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out"):
            params[f"lora.module.{module}"] = module in ranks
            params[f"lora.rank.{module}"] = ranks.get(module, 1)
        params.update({"lora.alpha": 16, "lora.dropout": 0.1, "train.learning_rate": lr})
        config = space.decode(params)
        if space.count(config) > limit:
            raise SystemExit(f"designed configuration {params} exceeds the budget")
        configs.append(config.to_dict())
    return configs


def sample_configs(space, limit: int, count: int, seed: int) -> list[dict]:
    """``count`` distinct feasible configurations, switch densities spread from sparse to dense."""
    rng = np.random.default_rng(seed)
    configs, seen = [], set()
    densities = np.linspace(0.15, 0.7, count)
    while len(configs) < count:
        params = space.repair(space.sample(rng, density=float(densities[len(configs)])), limit)
        config = space.decode(params)
        key = json.dumps(config.to_dict(), sort_keys=True) if config else None
        if config is None or key in seen or space.count(config) > limit:
            continue
        seen.add(key)
        configs.append(config.to_dict())
    return configs


def _train(job: tuple[str, int, dict]) -> tuple[str, int, dict]:
    name, index, request = job
    request = ProxyRequest.from_dict(request)
    result = run_proxy_trial(request, static_rungs(request.rungs) if request.rungs else None)
    kept = ("metric", "metrics", "trainable_params", "steps", "train_seconds", "train_tokens", "rungs")
    return name, index, {k: result[k] for k in kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--model", default=None, help="backbone (default: the packaged MiniLM)")
    parser.add_argument("--space", default="default")
    parser.add_argument("--budget", default="0.5%")
    parser.add_argument("--configs", type=int, default=10, help="with --sampled: how many")
    parser.add_argument("--sampled", action="store_true", help="random configs of --space, not the designed ones")
    parser.add_argument("--full-epochs", type=float, default=defaults.FULL_EPOCHS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"))
    parser.add_argument("--out", help="results file (default bench/results/proxy_fidelity-<task>.json: committed)")
    parser.add_argument("--cache", help="tokenisation cache folder (default runs/bench/cache)")
    parser.add_argument("--full-seeds", type=int, nargs="+", default=list(FULL_SEEDS), help="seeds of full training")
    parser.add_argument("--quick", action="store_true", help="4 configs, 1 epoch (smoke test)")
    parser.add_argument("--report", action="store_true", help="train nothing: the table of what --out holds")
    args = parser.parse_args()

    model = args.model or default_model()
    task = get_task(args.task)
    info = backbone_info(model, task.num_labels)
    limit = parse_budget(args.budget).limit(info.backbone_params)
    n_configs = 4 if args.quick else args.configs
    schedule = full_fidelity(epochs=1 if args.quick else args.full_epochs)
    out = Path(args.out or f"bench/results/proxy_fidelity-{task.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    stored = json.loads(out.read_text()) if out.is_file() else {}
    same = {k: stored.get(k) for k in ("task", "model", "space", "budget")}
    if same == {"task": task.name, "model": model, "space": args.space, "budget": args.budget} and not args.sampled:
        configs = stored["configs"][:n_configs]  # as stored: no Optuna needed (a GPU machine without it runs this)
    else:
        from autopeft.space import SearchSpace  # Optuna distributions: only to build configurations afresh

        space = SearchSpace.load(args.space if args.sampled else "default", info)
        configs = sample_configs(space, limit, n_configs, 0) if args.sampled else designed_configs(space, limit)
    configs = configs[:n_configs]
    n_configs = len(configs)
    header = {"task": task.name, "model": model, "space": args.space, "budget": args.budget, "configs": configs}
    state = stored if {k: stored.get(k) for k in header} == header else {**header, "results": {}}
    results: dict[str, dict] = state["results"]
    if state.get("proxy_revision", 1) < 3:  # references of an older trainer: retrain everything
        results.clear()
    state["proxy_revision"] = PROXY_REVISION
    state["settings"] = {"full": asdict(schedule), "rungs": {**asdict(schedule), "snapshots": list(SNAPSHOTS)}}
    rung_key = f"rungs-r{PROXY_REVISION}-e{schedule.epochs:g}"  # what a search trains, scored at the snapshots
    cache = str(Path(args.cache or "runs/bench/cache"))

    jobs = []
    full_keys = [f"full/s{seed}" for seed in args.full_seeds]
    for index, config in enumerate(configs):  # full trainings first: they are the references
        for key, seed in zip(full_keys, args.full_seeds, strict=True):
            if f"{key}/{index}" not in results:
                request = ProxyRequest(model, task.name, args.data_dir, config, schedule, seed, 1, cache,
                                       scored_on="validation")  # fmt: skip
                jobs.append((key, index, request.to_dict()))
    for index, config in enumerate(configs):
        if f"{rung_key}/{index}" not in results:
            request = ProxyRequest(model, task.name, args.data_dir, config, schedule, RUNG_SEED, 1, cache,
                                   rungs=SNAPSHOTS, scored_on="selection", selection_seed=SELECTION_SEED)  # fmt: skip
            jobs.append((rung_key, index, request.to_dict()))
    if jobs and not args.report:
        print(f"{len(jobs)} trainings to run ({len(results)} already in {out})", flush=True)

        def store(landed: tuple[str, int, dict]) -> str:
            name, index, result = landed
            results[f"{name}/{index}"] = result
            out.write_text(json.dumps(state, indent=1))
            score = f"{task.metric}={result['metric']:.4f} ({result['train_seconds']:.0f}s training)"
            return f"{name} config {index}: {score}"

        run_pool(jobs, _train, args.jobs, store)
    report(task, args, configs, results, full_keys, rung_key)


def report(task, args, configs: list[dict], results: dict, full_keys: list[str], rung_key: str) -> None:
    """Print the per-configuration table, the noise ceiling, the per-rung correlations and the final line."""
    n_configs = len(configs)
    done = [i for i in range(n_configs) if all(f"{k}/{i}" in results for k in [*full_keys, rung_key])]
    if len(done) < n_configs:
        print(f"\npartial: {len(done)} of {n_configs} configurations have every training; the table shows those")
    if len(done) < 3:
        raise SystemExit(f"{len(done)} complete configurations: too few to rank")

    def full(metric: str, index: int) -> float:
        """The full-training reference: the mean over the full seeds, on the validation split."""
        return float(np.mean([results[f"{key}/{index}"]["metrics"][metric] for key in full_keys]))

    runs = [results[f"{rung_key}/{i}"] for i in done]
    fractions = [r["fraction"] for r in runs[0]["rungs"]] + [1.0]

    def at(run: dict, rung: int) -> dict:
        return run["rungs"][rung]["metrics"] if rung < len(run["rungs"]) else run["metrics"]

    print(f"\n{task.name}, {len(done)} configurations of space '{args.space}' within {args.budget}; full training: "
          f"mean of seeds {args.full_seeds} on validation; rungs: one run of the same schedule on the selection "
          f"split, seed {RUNG_SEED}")  # fmt: skip
    print(f"{'config':>6} {'params':>8} {'lr':>8} {'full':>9} {'last rung':>10}  ({task.metric})")
    for i, run in zip(done, runs, strict=True):
        lr = configs[i]["training"]["learning_rate"]
        print(f"{i:>6} {run['trainable_params']:>8} {lr:8.1e} {full(task.metric, i):9.4f} {run['metric']:10.4f}")
    reference = [full(task.metric, i) for i in done]
    if len(full_keys) > 1:  # the noise ceiling: how well one full-training seed ranks as another does
        pairs = [(a, b) for a in full_keys for b in full_keys if a < b]
        ceiling = np.mean([
            spearmanr([results[f"{a}/{i}"]["metric"] for i in done], [results[f"{b}/{i}"]["metric"] for i in done])[0]
            for a, b in pairs
        ])  # fmt: skip
        print(f"\nfull training seed vs seed: rho {task.metric} {ceiling:.3f} (the noise ceiling of any rung)")
    print(f"\n{'rung':>8} {'steps':>6} {'rho neg_loss':>13} {'rho ' + task.metric:>12} {'cost vs full':>13}")
    ranked = {}
    for rung, fraction in enumerate(fractions):
        rho_loss = float(spearmanr([at(r, rung)["neg_loss"] for r in runs], reference)[0])
        rho_metric = float(spearmanr([at(r, rung)[task.metric] for r in runs], reference)[0])
        steps = runs[0]["rungs"][rung]["step"] if rung < len(runs[0]["rungs"]) else runs[0]["steps"]
        ranked[round(fraction, 4)] = {"neg_loss": rho_loss, "metric": rho_metric}
        name = str(Fraction(fraction).limit_denominator(64))
        print(f"{name:>8} {steps:>6} {rho_loss:13.3f} {rho_metric:12.3f} {fraction:13.3f}")
    first = min(ranked, key=lambda f: abs(f - defaults.FIRST_RUNG))
    score = defaults.RUNG_SCORE
    print(f"spearman={ranked[first][score]:.3f} rung={Fraction(first).limit_denominator(64)} score={score}")


if __name__ == "__main__":
    main()
