"""``predict``: a trained folder's answers for a file of texts, in batches."""

from __future__ import annotations

import argparse
import sys

from autopeft.cli.base import Command
from autopeft.errors import AutopeftError


class Predict(Command):
    name = "predict"
    help = "label a CSV, TSV, JSON Lines or Parquet file with a trained model folder"
    description = (
        "Run a trained folder (retrain's, `export --trained`'s, `evaluate --out`'s) on every row of a file that holds "
        "the task's text columns. Writes a CSV: the input's id column (id, idx, index or guid; else the row number), "
        "then the label and each class's probability p_<label> (or the score, for regression). The file is read in "
        "batches, so a large one is never held whole."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True, help="a trained model folder")
        parser.add_argument("--input", required=True, help="the rows: .csv, .tsv, .jsonl or .parquet")
        parser.add_argument("--out", help="the answers' CSV file (default: standard output)")
        parser.add_argument("--batch-size", type=int, default=256, help="rows read and scored at a time (default 256)")
        parser.add_argument(
            "--trust-remote-code", action=argparse.BooleanOptionalAction, default=False, help="allow the model's code"
        )

    def take_action(self, args: argparse.Namespace) -> int:
        import os
        from pathlib import Path

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from autopeft.inference import Predictor, count_rows, read_batches, with_ids

        if args.batch_size < 1:
            raise AutopeftError(f"--batch-size must be at least 1, got {args.batch_size}")
        batches = read_batches(args.input, args.batch_size)
        total = count_rows(args.input)
        predictor = Predictor(args.model, trust_remote_code=args.trust_remote_code)
        out = Path(args.out) if args.out else None
        partial = out.with_name(f".{out.name}.{os.getpid()}.part") if out else None
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
        handle = partial.open("w", newline="") if partial else sys.stdout
        columns = (TextColumn("[bold]predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        done = 0
        try:
            with Progress(*columns, console=Console(stderr=True), transient=out is None) as progress:
                task = progress.add_task("predicting", total=total)
                for rows in batches:
                    answer = with_ids(rows, predictor.predict(rows), done)
                    answer.to_csv(handle, index=False, header=done == 0)
                    done += len(rows)
                    progress.update(task, completed=done)
        except BaseException:
            if partial:
                handle.close()
                partial.unlink(missing_ok=True)
            raise
        if partial:
            handle.close()
            partial.replace(out)  # whole or not at all
            Console(stderr=True, soft_wrap=True).print(f"{done:,} rows predicted to {out}")
        return 0
