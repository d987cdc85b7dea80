"""``jobs``, ``logs``, ``stop`` and ``status``: searches submitted to a cluster, and any study's progress."""

from __future__ import annotations

import argparse
import os
import time

from autopeft.cli.base import Command, json_option, open_view, study_options
from autopeft.cli.search import address_option, require_address


class Jobs(Command):
    name = "jobs"
    help = "list the searches submitted to a cluster"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        address_option(parser)
        parser.add_argument("--storage", default=os.environ.get("AUTOPEFT_STORAGE"), help="storage to count trials in")
        json_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from rich.console import Console
        from rich.table import Table

        from autopeft.service import list_jobs
        from autopeft.study import dumps

        address = require_address(args)
        rows = list_jobs(address, args.storage)
        if args.json:
            print(dumps(rows))
            return 0
        table = Table(title=f"autopeft jobs on {address}", title_justify="left")
        for column in ("job", "study", "state", "trials", "pareto", "started"):
            table.add_column(column)
        for row in rows:
            trials = f"{row['finished']}/{row['target']}" if row["finished"] is not None else f"?/{row['target']}"
            pareto = str(row["pareto_size"]) if row["pareto_size"] is not None else "?"
            table.add_row(row["job"], row["study"], row["state"], trials, pareto, row["started"] or "")
        Console().print(table)
        if rows and rows[0]["finished"] is None:
            Console(stderr=True, soft_wrap=True).print(
                "trials: pass --storage (or $AUTOPEFT_STORAGE) of the jobs' store to count them"
            )
        return 0


class Logs(Command):
    name = "logs"
    help = "show a submitted search's log"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        address_option(parser)
        parser.add_argument("job", help="the job id (autopeft jobs lists them)")
        parser.add_argument("--follow", action="store_true", help="keep printing until the job ends")

    def take_action(self, args: argparse.Namespace) -> int:
        from autopeft.service import job_logs

        for chunk in job_logs(require_address(args), args.job, args.follow):
            print(chunk, end="", flush=True)
        return 0


class Stop(Command):
    name = "stop"
    help = "stop a submitted search (its finished trials are kept)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        address_option(parser)
        parser.add_argument("job", help="the job id")

    def take_action(self, args: argparse.Namespace) -> int:
        from autopeft.service import stop_job

        state = stop_job(require_address(args), args.job)
        print(f"job {args.job}: {state}; the study keeps its finished trials (submit the same search to continue it)")
        return 0


class Status(Command):
    name = "status"
    help = "a study's progress from its storage: trials by state, time left, Pareto set"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        study_options(parser)
        parser.add_argument("--follow", action="store_true", help="refresh until the study reaches its target")
        parser.add_argument("--every", type=float, default=10.0, help="seconds between refreshes with --follow")
        json_option(parser)

    def take_action(self, args: argparse.Namespace) -> int:
        from rich.console import Console

        from autopeft.display import pareto_table
        from autopeft.service import study_status
        from autopeft.study import dumps
        from autopeft.timing import clock

        console = Console(soft_wrap=True)
        while True:
            view = open_view(args)
            status = study_status(view)
            if args.json:
                print(dumps(status), flush=True)
            else:
                eta = clock(status["seconds_left"])
                done = status["finished"] + status["pruned"]
                confirming = f"; confirming trials {status['confirming']}" if status["confirming"] else ""
                console.print(
                    f"[bold]{status['study']}[/]: {done}/{status['target']} trials done ({status['finished']} trained "
                    f"to the end, {status['pruned']} stopped at a rung), {status['running']} running, "
                    f"{status['failed']} failed{confirming}; {eta} left"
                )
                console.print(pareto_table(view, "current Pareto set"))
            if not args.follow or status["finished"] + status["pruned"] >= status["target"]:
                return 0
            time.sleep(max(1.0, args.every))
