"""Does a long search stay fast and small? 300 trials of a tiny training on one study, through the real path.

Runs ``autopeft search`` (the CLI, in its own process: the default sampler, a local Ray, SQLite storage, an
MLflow store, the status quo, successive halving, confirmations) with a tiny training (64 examples of RTE,
one epoch, the tiny model of the tests unless ``--model``), so that what grows with the number of trials
shows: the sampler's proposal (each trial's ``ask_seconds``: the optimiser's model and the storage writes), the
bookkeeping outside training after each trial (storing it, its MLflow run, the Pareto tags, the progress
metrics and plot), and the resident memory of the driver and of the workers. The search writes these
timings itself, one line per trial (``<runs>/logs/<study>/timings-*.jsonl``); this bench reads them and the
store, and prints a table by trial window and one line::

    ask_s_40_50=<median> ask_s_280_300=<median> bookkeeping_s_300=<median at 280-300> driver_rss_growth=<%>
        worker_rss_growth=<%>

Goals (issue 31): proposals at trials 280-300 within 3 s; bookkeeping per trial within 1 s at trial 300; resident
memory growth between trials 50 and 300 within 10%. Wall times: run it with nothing else on the machine.

    python bench/long_search.py --data-dir ../shared/data/glue                 # 300 trials (about an hour here)
    python bench/long_search.py --data-dir ../shared/data/glue --trials 60     # a quicker look
    python bench/long_search.py --report --runs-dir runs/long                  # the table of a finished run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STUDY = "long"
WINDOWS = ((1, 10), (40, 50), (140, 150), (280, 300))
"""Trial windows the table shows (1-based, inclusive); the last line compares the second and the last."""


def tiny_model(folder: Path) -> str:
    """A randomly initialised 3-layer BERT (hidden 32) with the default model's tokenizer (as the tests build it)."""
    from transformers import BertConfig, BertModel

    from autopeft.models import default_model, load_tokenizer

    if not (folder / "config.json").is_file():
        tokenizer = load_tokenizer(default_model())
        config = BertConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128,
        )  # fmt: skip
        BertModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_search_argv(model: str, data_dir: str, runs: Path, study: str, trials: int) -> list[str]:
    """``autopeft search`` arguments of a small search: the tiny model, 64 examples of RTE, half an epoch."""
    return [
        *("search", "--task", "rte", "--budget", "2%", "--model", model, "--epochs", "0.5"),
        *("--max-train-samples", "64", "--max-eval-samples", "64", "--data-dir", data_dir),
        *("--runs-dir", str(runs), "--study", study, "--trials", str(trials)),
    ]


def timings(runs: Path) -> list[dict]:
    """Every trial's timing line the search wrote, in the order the trials ended (the status quo's and the
    confirmations' lines left out)."""
    lines = []
    for path in sorted((runs / "logs" / STUDY).glob("timings-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if "trial" in line]


def window(rows: list[dict], low: int, high: int, key: str) -> list[float]:
    """The values of ``key`` of the trials that ended ``low``-th to ``high``-th (1-based)."""
    return [r[key] for r in rows[low - 1 : high] if r.get(key) is not None]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report(runs: Path) -> str:
    """Print the table of a finished run and return its last line."""
    rows = timings(runs)
    if not rows:
        raise SystemExit(f"no timings under {runs}/logs/{STUDY}: run the search first")
    print(f"{len(rows)} trials ended; medians per window of trials (in the order they ended)")
    print("| trials | ask s (median / max) | bookkeeping s (median / max) | driver RSS MB | worker RSS MB |")
    print("|---|---|---|---|---|")
    for low, high in WINDOWS:
        if low > len(rows):
            continue
        ask, books = window(rows, low, high, "ask_s"), window(rows, low, high, "bookkeeping_s")
        driver, worker = window(rows, low, high, "driver_rss_mb"), window(rows, low, high, "worker_rss_mb")
        cells = [
            f"{median(ask):.3f} / {max(ask):.3f}" if ask else "",
            f"{median(books):.3f} / {max(books):.3f}" if books else "",
            f"{median(driver):.0f}" if driver else "",
            f"{median(worker):.0f}" if worker else "",
        ]
        print(f"| {low}-{min(high, len(rows))} | " + " | ".join(cells) + " |")
    last = WINDOWS[-1] if len(rows) >= WINDOWS[-1][1] else (max(1, len(rows) - 20), len(rows))
    at = {
        "ask_early": median(window(rows, 40, 50, "ask_s")),
        "ask_late": median(window(rows, *last, "ask_s")),
        "books": median(window(rows, *last, "bookkeeping_s")),
    }

    def growth(key: str) -> float | None:
        start, end = median(window(rows, 45, 55, key)), median(window(rows, last[1] - 10, last[1], key))
        return None if not start or end is None else 100 * (end / start - 1)

    fmt = lambda v, f: "nan" if v is None else format(v, f)  # noqa: E731
    line = (
        f"ask_s_40_50={fmt(at['ask_early'], '.3f')} ask_s_{last[0]}_{last[1]}={fmt(at['ask_late'], '.3f')} "
        f"bookkeeping_s_{last[1]}={fmt(at['books'], '.3f')} driver_rss_growth={fmt(growth('driver_rss_mb'), '.1f')}% "
        f"worker_rss_growth={fmt(growth('worker_rss_mb'), '.1f')}%"
    )
    print(line)
    return line


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--model", help="backbone (default: a tiny random BERT built here)")
    parser.add_argument("--data-dir", default=os.environ.get("AUTOPEFT_DATA_DIR"))
    parser.add_argument("--runs-dir", default="runs/long", help="the study's runs folder (a rerun continues it)")
    parser.add_argument("--sampler", help="the search's sampler (default: the search's default); `random` isolates it")
    parser.add_argument("--report", action="store_true", help="train nothing: the table of what the run wrote")
    args = parser.parse_args(argv)
    runs = Path(args.runs_dir).resolve()
    if not args.report:
        model = args.model or tiny_model(Path(tempfile.gettempdir()) / "autopeft-long-search-tiny-bert")
        command = [
            sys.executable, "-m", "autopeft.cli", "search", "--task", "rte", "--budget", "2%", "--model", model,
            "--max-train-samples", "64", "--max-eval-samples", "64", "--epochs", "1", "--max-length", "64",
            "--runs-dir", str(runs), "--study", STUDY, "--trials", str(args.trials),
        ]  # fmt: skip
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        if args.sampler:
            command += ["--sampler", args.sampler]
        print("$ " + " ".join(command[2:]), flush=True)
        done = subprocess.run(command, stdout=subprocess.DEVNULL)
        if done.returncode:
            raise SystemExit(f"the search exited with {done.returncode}")
    return report(runs)


if __name__ == "__main__":
    main(sys.argv[1:])
