"""The fidelity bench ranks each rung's scores against full training, and its last line names the default first rung."""

from __future__ import annotations

import importlib.util
import types
from fractions import Fraction

from conftest import REPO

from autopeft import defaults
from autopeft.tasks import get_task


def load_bench():
    spec = importlib.util.spec_from_file_location("proxy_fidelity", REPO / "bench" / "proxy_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_rung_is_ranked_against_the_full_training_means_and_the_last_line_names_the_default(capsys):
    bench = load_bench()
    full = [0.70, 0.80, 0.75, 0.90]  # validation F1 of four configurations at full fidelity
    fractions = list(bench.SNAPSHOTS)
    results = {}
    for i, f1 in enumerate(full):
        for seed in (0, 2):
            results[f"full/s{seed}/{i}"] = {"metric": f1, "metrics": {"f1": f1, "accuracy": f1}}
        rungs = [
            # neg_loss ranks as full training does from the first rung on; the metric ties (the majority class)
            {"fraction": f, "step": 10 * (k + 1), "metrics": {"f1": 0.8, "accuracy": 0.7, "neg_loss": f1 - 1}}
            for k, f in enumerate(fractions)
        ]
        results[f"rungs/{i}"] = {
            "metric": f1,
            "metrics": {"f1": f1, "neg_loss": f1 - 1},
            "steps": 90,
            "rungs": rungs,
            "trainable_params": 1000 * i,
        }
    args = types.SimpleNamespace(space="default", budget="0.5%", full_seeds=[0, 2])
    bench.report(get_task("mrpc"), args, [{"training": {"learning_rate": 1e-3}}] * 4, results,
                 ["full/s0", "full/s2"], "rungs")  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    rows = {line.split()[0]: line.split() for line in out if line.split() and "/" in line.split()[0]}
    assert set(rows) >= {"1/9", "1/3", "2/3"}
    assert rows["1/9"][2] == "1.000" and rows["1/9"][3] == "nan"  # neg_loss ranks; a tied metric cannot
    first = Fraction(defaults.FIRST_RUNG).limit_denominator(64)
    assert out[-1] == f"spearman=1.000 rung={first} score={defaults.RUNG_SCORE}"
