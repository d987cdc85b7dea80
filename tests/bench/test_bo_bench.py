"""The optimiser's benchmark runs the production path; its quick code path must keep working."""

from __future__ import annotations

import importlib.util
import re

from conftest import REPO


def load_bench():
    spec = importlib.util.spec_from_file_location("bo_bench", REPO / "bench" / "bo_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_quick_bench_runs_and_prints_its_final_line(capsys):
    bench = load_bench()
    line = bench.main(["--quick", "--trials", "11", "--samplers", "botorch,random"])
    assert re.fullmatch(r"suggest_s_ours=\S+ suggest_s_gp=nan speedup=nan hv_ratio_vs_best_peer=\d+\.\d{3}", line), line
    table = capsys.readouterr().out
    rows = [r for r in table.splitlines() if r.startswith("peft ")]
    assert len(rows) == 2 and all(r.split()[-1] == "0" for r in rows), table  # no fallback


def test_the_bench_studies_store_what_a_search_stores(tmp_path):
    """Its study comes from a spec and its sampler from the study, as in ``run_search``."""
    bench = load_bench()
    seconds, hv, fallbacks = bench.run("peft", "botorch", 1, 10, str(tmp_path))
    assert len(seconds) == len(hv) == 10 and fallbacks == 0 and hv[-1] >= hv[0] > 0
    bound = bench.open_problem_study("peft", "botorch", 1, 10, str(tmp_path))  # the same study, reopened
    assert bound.spec.what.objectives == "metric,params" and type(bound.study.sampler).__name__ == "BoTorchMOSampler"
    stored = bound.study.trials
    assert len(stored) == 10
    assert all(t.values[1] == t.user_attrs["trainable_params"] / bound.info.backbone_params for t in stored)
