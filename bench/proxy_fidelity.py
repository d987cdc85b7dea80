"""Does the cheap proxy rank configurations as full training does? Spearman of proxy vs full scores.

Takes ten designed configurations of the ``default`` space that span what a search meets (768 to
74k trainable parameters, one layer to all six, one module type to all, learning rates 5e-4 to
8e-3), or with ``--sampled`` random ones of ``--space``, trains each at full fidelity with
``--full-seeds`` seeds (``--full-epochs`` over the whole train split, scored on the validation
split, as ``retrain`` does: the reference is the mean over the seeds) and once per proxy setting as
a search trains it (on the train split less the held-out selection part, scored on that selection
part: the search never reads validation), and prints, per proxy setting, the Spearman correlation
of its selection score with the full-training validation metric and what it costs (training
examples and seconds per configuration). The correlation between two full-training seeds is printed
too: the noise ceiling no proxy can beat. Proxy and full runs use different seeds, so the
correlation is not helped by a shared initialisation.

Every finished training is written to ``--out`` (JSON) at once; a rerun skips what is there, so an
interrupted study continues. Trainings run in ``--jobs`` processes with one torch thread each.

    python bench/proxy_fidelity.py --data-dir ../shared/data/glue            # MRPC, the 10 designed configs
    python bench/proxy_fidelity.py --task rte --data-dir ../shared/data/glue # the second task
    python bench/proxy_fidelity.py --quick --data-dir ../shared/data/glue    # 4 configs, 1 epoch "full" (smoke test)

Three proxy scores are ranked against the full-training task metric: the proxy's own task metric,
its ``neg_loss`` (minus the dev loss), which still orders models whose thresholded metric ties, and
its ``train_loss`` score (minus the mean training loss of its last eighth of steps: what a free
early-stopping rung sees). The last line is ``spearman=<r> setting=<name> proxy_score=<score>``:
the rho of the score the search selects on by default (the first of ``defaults.OBJECTIVES``:
``neg_loss``, or the task metric) at the setting the search trains by default on this task (the
``defaults``; a setting that trains every example stands for the default when the split holds no
more than its cap), or at the best-ranking setting when none of them is the default.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from autopeft.budget import parse_budget  # noqa: E402
from autopeft.defaults import OBJECTIVES  # noqa: E402
from autopeft.models import backbone_info, default_model  # noqa: E402
from autopeft.objectives import parse_objectives  # noqa: E402
from autopeft.tasks import get_task  # noqa: E402
from autopeft.training import ProxyRequest, ProxySettings, full_fidelity, run_proxy_trial  # noqa: E402
from autopeft.training.proxy import train_loss_score  # noqa: E402

PROXY_SETTINGS = {  # every batch size written out: a stored result must keep meaning what its name says
    "e1-n1024": ProxySettings(epochs=1, max_train_samples=1024, batch_size=16),
    "e1-n2048": ProxySettings(epochs=1, max_train_samples=2048, batch_size=16),  # the default until session 3
    "e2-n2048": ProxySettings(epochs=2, max_train_samples=2048, batch_size=16),
    "e1-all": ProxySettings(epochs=1, max_train_samples=None, batch_size=16),  # one epoch of the whole split
    "e1-all-noattn": ProxySettings(epochs=1, max_train_samples=None, batch_size=16, attention_dropout=False),
    # the same examples in twice the optimiser steps: full training learns only after ~250 steps of 16
    "e1-n2048-b8": ProxySettings(epochs=1, max_train_samples=2048, batch_size=8),  # the default (neg_loss)
    "e1-all-b8": ProxySettings(epochs=1, max_train_samples=None, batch_size=8),  # the default in session 4
    "e1-n2048-b4": ProxySettings(epochs=1, max_train_samples=2048, batch_size=4),
    "e1-n1024-b4": ProxySettings(epochs=1, max_train_samples=1024, batch_size=4),
}
FULL_SEEDS, PROXY_SEED, SELECTION_SEED = (0, 2), 1, 0
PROXY_REVISION = 3
"""Revision of the trainer the stored results come from (2: cheap CPU dropout masks; 3: proxies
scored on the selection split, every fresh parameter drawn from the run's seed). Stored proxy
results of another revision are retrained; full-training references of revision 3 on are kept
(they are the ground truth whichever correct trainer produced them), older ones were one seed
with a head that did not follow the seed and are retrained."""


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
    result = run_proxy_trial(ProxyRequest.from_dict(request))
    kept = ("metric", "metrics", "trainable_params", "steps", "train_seconds", "train_losses")
    return name, index, {k: result[k] for k in kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--model", default=None, help="backbone (default: the packaged MiniLM)")
    parser.add_argument("--space", default="default")
    parser.add_argument("--budget", default="0.5%")
    parser.add_argument("--configs", type=int, default=10, help="with --sampled: how many")
    parser.add_argument("--sampled", action="store_true", help="random configs of --space, not the designed ones")
    parser.add_argument("--full-epochs", type=float, default=3.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"))
    parser.add_argument("--out", help="results file (default bench/results/proxy_fidelity-<task>.json: committed)")
    parser.add_argument("--cache", help="tokenisation cache folder (default runs/bench/cache)")
    parser.add_argument("--full-seeds", type=int, nargs="+", default=list(FULL_SEEDS), help="seeds of full training")
    parser.add_argument("--quick", action="store_true", help="4 configs, 1 full epoch, two proxy settings")
    parser.add_argument("--settings", help=f"comma-separated proxy settings (default all: {','.join(PROXY_SETTINGS)})")
    parser.add_argument(
        "--report",
        action="store_true",
        help="train nothing: the table of what --out holds (its stored settings unless --settings)",
    )
    args = parser.parse_args()

    model = args.model or default_model()
    task = get_task(args.task)
    info = backbone_info(model, task.num_labels)
    limit = parse_budget(args.budget).limit(info.backbone_params)
    n_configs = 4 if args.quick else args.configs
    full_settings = full_fidelity(epochs=1 if args.quick else args.full_epochs)
    chosen = args.settings.split(",") if args.settings else list(PROXY_SETTINGS)[: 2 if args.quick else None]
    unknown = [name for name in chosen if name not in PROXY_SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {', '.join(unknown)}; known: {', '.join(PROXY_SETTINGS)}")
    settings = {"full": full_settings, **{name: PROXY_SETTINGS[name] for name in chosen}}
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
    state = json.loads(out.read_text()) if out.is_file() else {}
    if {k: state.get(k) for k in header} != header:
        state = {**header, "settings": {k: asdict(v) for k, v in settings.items()}, "results": {}}
    results: dict[str, dict] = state["results"]
    if state.get("proxy_revision", 1) != PROXY_REVISION:  # the trainer changed: retrain what it changed
        keep = "full/s" if state.get("proxy_revision", 1) >= 3 else "\0"
        for key in [k for k in results if not k.startswith(keep)]:
            del results[key]
        state["proxy_revision"] = PROXY_REVISION
    if args.report and not args.settings:  # the table of what is stored
        settings = {k: v for k, v in settings.items() if k == "full" or any(r.startswith(f"{k}/") for r in results)}
    cache = str(Path(args.cache or "runs/bench/cache"))

    jobs = []
    full_keys = [f"full/s{seed}" for seed in args.full_seeds]
    for name, proxy in settings.items():  # full trainings first: they are the longest
        for index, config in enumerate(configs):
            for key, seed in zip(full_keys, args.full_seeds, strict=True) if name == "full" else [(name, PROXY_SEED)]:
                if f"{key}/{index}" in results:
                    continue
                evaluate_on = "validation" if name == "full" else "selection"
                request = ProxyRequest(
                    model, task.name, args.data_dir, config, proxy, seed, 1, cache,
                    evaluate_on=evaluate_on, selection_seed=SELECTION_SEED,
                )  # fmt: skip
                jobs.append((key, index, request.to_dict()))
    started = time.perf_counter()
    if jobs and not args.report:
        print(f"{len(jobs)} trainings to run ({len(results)} already in {out})", flush=True)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(_train, job) for job in jobs]
            for done, future in enumerate(as_completed(futures), 1):
                name, index, result = future.result()
                results[f"{name}/{index}"] = result
                out.write_text(json.dumps(state, indent=1))
                print(
                    f"[{done}/{len(jobs)} {time.perf_counter() - started:6.0f}s] {name:9s} config {index}: "
                    f"{task.metric}={result['metric']:.4f} ({result['train_seconds']:.0f}s training)",
                    flush=True,
                )

    def full(metric: str, index: int) -> float:
        """The full-training reference: the mean over the full seeds, on the validation split."""
        return float(np.mean([results[f"{key}/{index}"]["metrics"][metric] for key in full_keys]))

    names = [n for n in settings if n != "full"]
    done = [i for i in range(n_configs) if all(f"{k}/{i}" in results for k in [*full_keys, *names])]
    if len(done) < n_configs:
        print(f"\npartial: {len(done)} of {n_configs} configurations have every training; the table shows those")
    configs, n_configs = [configs[i] for i in done], len(done)
    results = {f"{k}/{j}": results[f"{k}/{i}"] for j, i in enumerate(done) for k in [*full_keys, *names]}
    if n_configs < 3:
        raise SystemExit(f"{n_configs} complete configurations: too few to rank")
    print(f"\n{task.name}, {n_configs} configurations of space '{args.space}' within {args.budget}; full training: "
          f"mean of seeds {args.full_seeds} on validation; proxies on the selection split:")  # fmt: skip
    print(
        f"{'config':>6} {'params':>8} {'lr':>8} {'full':>9} "
        + " ".join(f"{n:>9}" for n in names)
        + f"  ({task.metric})"
    )
    for i, config in enumerate(configs):
        row = " ".join(f"{results[f'{n}/{i}']['metric']:9.4f}" for n in names)
        params = results[f"{full_keys[0]}/{i}"]["trainable_params"]
        print(f"{i:>6} {params:>8} {config['training']['learning_rate']:8.1e} {full(task.metric, i):9.4f} {row}")
    full_main = [full(task.metric, i) for i in range(n_configs)]
    if len(full_keys) > 1:  # the noise ceiling: how well one full-training seed ranks as another does
        pairs = [(a, b) for a in full_keys for b in full_keys if a < b]
        ceiling = np.mean([
            spearmanr([results[f"{a}/{i}"]["metric"] for i in range(n_configs)],
                      [results[f"{b}/{i}"]["metric"] for i in range(n_configs)])[0]
            for a, b in pairs
        ])  # fmt: skip
        print(f"\nfull training seed vs seed: rho {task.metric} {ceiling:.3f} (the noise ceiling of any proxy)")
    others = [m for m in task.metrics if m != task.metric]
    extra = "".join(f" {'rho ' + m:>13}" for m in others)
    print(f"\n{'setting':>9} {'rho ' + task.metric:>9}{extra} {'rho neg_loss':>13} {'rho train_loss':>15} "
          f"{'train examples':>15} {'train s/config':>15} {'cost vs full':>13}")  # fmt: skip
    full_seconds = np.mean([results[f"{key}/{i}"]["train_seconds"] for key in full_keys for i in range(n_configs)])
    rows = []
    for name in names:
        proxy = settings[name]

        def proxy_scores(metric: str, name: str = name) -> list[float]:
            return [results[f"{name}/{i}"]["metrics"][metric] for i in range(n_configs)]

        def rho(metric: str) -> float:
            return float(spearmanr(proxy_scores(metric), [full(metric, i) for i in range(n_configs)])[0])

        # neg_loss: the proxy's smooth score (minus its selection loss) against full training's task metric;
        # train_loss: minus the mean training loss of its last eighth of steps (what a free rung sees).
        rho_loss = float(spearmanr(proxy_scores("neg_loss"), full_main)[0])
        runs = [results[f"{name}/{i}"] for i in range(n_configs)]
        rho_train = float(spearmanr([train_loss_score(r["train_losses"], r["steps"]) for r in runs], full_main)[0])
        examples = results[f"{name}/0"]["steps"] * proxy.batch_size
        seconds = float(np.mean([results[f"{name}/{i}"]["train_seconds"] for i in range(n_configs)]))
        rows += [(name, task.metric, rho(task.metric), seconds), (name, "neg_loss", rho_loss, seconds)]
        rows += [(name, "train_loss", rho_train, seconds)]
        others_text = "".join(f" {rho(m):13.3f}" for m in others)
        print(f"{name:>9} {rho(task.metric):9.3f}{others_text} {rho_loss:13.3f} {rho_train:15.3f} {examples:15d} "
              f"{seconds:15.1f} {seconds / full_seconds:13.3f}")  # fmt: skip
    full_examples = results[f"{full_keys[0]}/0"]["steps"] * full_settings.batch_size
    print(f"{'full':>9} {1.0:9.3f}{' ' * (len(extra) + 30)} {full_examples:15d} {full_seconds:15.1f} {1.0:13.3f}")
    score = parse_objectives(OBJECTIVES)[0].name  # what the search selects on by default
    score = task.metric if score == "metric" else score
    ranked = {row[0]: row[2] for row in rows if row[1] == score}
    whole = [n for n in names if settings[n].max_train_samples is None]  # they tell the split's size
    available = results[f"{whole[0]}/0"]["steps"] * settings[whole[0]].batch_size if whole else None
    default = next((n for n in names if _is_search_default(settings[n], available)), None)
    name = default or max(ranked, key=ranked.__getitem__)
    if default is None:
        print("no setting is the search's default on this task: the last line names the best one")
    print(f"spearman={ranked[name]:.3f} setting={name} proxy_score={score}")


def _is_search_default(setting: ProxySettings, available: int | None) -> bool:
    """Whether ``setting`` trains as the search's default proxy does.

    Args:
        setting: a proxy setting of the bench.
        available: examples the proxy's train split holds (``None``: unknown; then only an equal setting is).
    """
    default = ProxySettings()
    if setting == default:
        return True
    if available is None or replace(setting, max_train_samples=None) != replace(default, max_train_samples=None):
        return False

    def trained(cap: int | None) -> int:
        return min(cap or available, available)

    return trained(setting.max_train_samples) == trained(default.max_train_samples)


if __name__ == "__main__":
    main()
