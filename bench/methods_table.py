"""The seed methods on a task at full fidelity, beside LoRA r=8 (q, v): trainable share, peak memory, metric.

Each of ``--methods`` is the reference configuration ``baselines`` would train (``autopeft.references``: one
home for them), trained as ``retrain`` trains (``full_fidelity()``: the whole train split, 3 epochs, scored on
the validation split) with each of ``--seeds``. Its peak training memory at ``--shape`` is predicted by the
backbone's calibrated memory model and measured as a trial measures it. Every finished training is written to
``--out`` at once; a rerun skips what is there. It imports no Optuna, Ray or MLflow (a GPU machine runs it).

    python bench/methods_table.py --data-dir ../shared/data/glue              # MRPC, 5 methods x 3 seeds
    python bench/methods_table.py --data-dir ../shared/data/glue --report     # the table of what is stored

The last line is ``task=<t> seeds=<n> runs=<done>/<all> lora=<mean> best_new=<name> best_new_minus_lora=<points>
lowest_memory=<name> lowest_memory_vs_lora=<ratio>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from _pool import run_pool  # bench/, the script's own folder

from autopeft.budget import parse_budget
from autopeft.methods.build import count_trainable
from autopeft.models import backbone_info, default_model
from autopeft.references import BASELINES
from autopeft.tasks import get_task
from autopeft.training import ProxyRequest, full_fidelity, run_proxy_trial
from autopeft.training.memory import parse_shape
from autopeft.training.proxy import measure_memory, memory_model

METHODS = ("lora", "side_tuning", "sparse_plus_lowrank", "incre_lora", "subspace")
MIB = 2**20


def _train(job: tuple[str, dict]) -> tuple[str, dict]:
    key, request = job
    result = run_proxy_trial(ProxyRequest.from_dict(request))
    return key, {k: result[k] for k in ("metric", "metrics", "trainable_params", "steps", "train_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--model", default=None, help="backbone (default: the packaged MiniLM)")
    parser.add_argument("--budget", default="0.5%", help="the budget the references are sized to")
    parser.add_argument("--methods", default=",".join(METHODS), help="baseline names, LoRA first")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shape", default="16x128", help="the batch shape memory is stated for")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"))
    parser.add_argument("--out", help="results file (default bench/results/methods-<task>.json: committed)")
    parser.add_argument("--cache", default="runs/bench/cache", help="tokenisation cache folder")
    parser.add_argument("--report", action="store_true", help="train nothing: the table of what --out holds")
    args = parser.parse_args()

    model, task = args.model or default_model(), get_task(args.task)
    info = backbone_info(model, task.num_labels)
    limit = parse_budget(args.budget).limit(info.backbone_params)
    names = [n.strip() for n in args.methods.split(",")]
    configs = {name: BASELINES[name].config(info, limit) for name in names}
    schedule = full_fidelity()
    out = Path(args.out or f"bench/results/methods-{task.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    state = json.loads(out.read_text()) if out.is_file() else {}
    header = {"task": task.name, "model": str(model), "configs": {n: c.to_dict() for n, c in configs.items()}}
    if {k: state.get(k) for k in header} != header:
        state = {**header, "results": {}, "memory": {}}
    results, memory = state["results"], state["memory"]

    shape = parse_shape(args.shape)
    if not args.report and any(n not in memory for n in names):
        calibrated = memory_model(model, task.num_labels, schedule, shape, args.cache + "/memory")
        for name, config in configs.items():
            if name not in memory:
                predicted = calibrated.predict(config, info, count_trainable(config, info))
                measured = measure_memory(model, task.num_labels, schedule, config, shape)
                memory[name] = {"predicted": predicted, "measured": measured, "shape": str(shape)}
                out.write_text(json.dumps(state, indent=1))

    jobs = [
        (f"{name}/s{seed}", ProxyRequest(model, task.name, args.data_dir, configs[name].to_dict(), schedule, seed, 1,
                                         args.cache, scored_on="validation").to_dict())
        for seed in args.seeds for name in names if f"{name}/s{seed}" not in results
    ]  # fmt: skip
    if jobs and not args.report:
        print(f"{len(jobs)} trainings to run ({len(results)} already in {out})", flush=True)

        def store(landed: tuple[str, dict]) -> str:
            key, result = landed
            results[key] = result
            out.write_text(json.dumps(state, indent=1))
            return f"{key}: {task.metric}={result['metric']:.4f} ({result['train_seconds']:.0f}s training)"

        run_pool(jobs, _train, args.jobs, store)
    report(task, info, names, configs, results, memory, args.seeds)


def report(task, info, names, configs, results, memory, seeds) -> None:
    """Print the table and the final line."""
    print(f"\n{task.name}, full fidelity, validation, seeds {seeds}; memory at {next(iter(memory.values()))['shape']}")
    print(f"{'method':34s} {'trainable %':>11s} {'pred MiB':>9s} {'meas MiB':>9s}  {task.metric} mean ± std (n)")
    means = {}
    for name in names:
        scores = [results[f"{name}/s{s}"]["metric"] for s in seeds if f"{name}/s{s}" in results]
        share = 100 * info.fraction(count_trainable(configs[name], info))
        mem = memory.get(name, {})
        text = (
            f"{statistics.mean(scores):.4f} ± {statistics.stdev(scores) if len(scores) > 1 else 0:.4f} ({len(scores)})"
        )
        means[name] = statistics.mean(scores) if scores else float("nan")
        print(f"{BASELINES[name].label:34s} {share:>11.3f} {mem.get('predicted', 0) / MIB:>9.1f} "
              f"{mem.get('measured', 0) / MIB:>9.1f}  {text if scores else '-'}")  # fmt: skip
    new = [n for n in names if n != "lora"]
    best = max(new, key=lambda n: means[n])
    lowest = min(names, key=lambda n: memory.get(n, {}).get("measured", float("inf")))
    ratio = (
        memory[lowest]["measured"] / memory["lora"]["measured"]
        if "lora" in memory and lowest in memory
        else float("nan")
    )
    print(
        f"task={task.name} seeds={len(seeds)} runs={sum(f'{n}/s{x}' in results for n in names for x in seeds)}/"
        f"{len(names) * len(seeds)} lora={means.get('lora', float('nan')):.4f} best_new={best} "
        f"best_new_minus_lora={100 * (means[best] - means.get('lora', float('nan'))):.2f} lowest_memory={lowest} "
        f"lowest_memory_vs_lora={ratio:.2f}"
    )


if __name__ == "__main__":
    main()
