"""A new spec field is declared in one place, and everything else follows: the flag, its check, the stored spec,
the resume comparison and the spec ``submit`` ships. The test adds a dummy field to a copy of the package (one
line in ``study/spec.py``) and drives that copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

from conftest import REPO

DUMMY = '    colour: Annotated[int, Option("a dummy option", check=at_least(1))] = 1\n'

DRIVE = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    from autopeft import keys
    from autopeft.cli import build_parser
    from autopeft.cli.search import spec_of_args
    from autopeft.errors import AutopeftError
    from autopeft.service import ship
    from autopeft.study import StudySpec, open_study

    model, data_dir, runs = sys.argv[1:4]
    base = ["search", "--task", "rte", "--budget", "2%", "--model", model, "--data-dir", data_dir,
            "--runs-dir", runs, "--study", "dummy"]
    out = {"help": "--colour" in build_parser()._subparsers._group_actions[0].choices["search"].format_help()}
    try:
        spec_of_args(build_parser().parse_args([*base, "--colour", "0"]))
    except AutopeftError as exc:
        out["invalid"] = str(exc)
    spec = spec_of_args(build_parser().parse_args([*base, "--colour", "2"]))
    study = open_study(spec).study
    out["stored"] = study.user_attrs[keys.SPEC]["what"]["colour"]
    out["settings"] = study.user_attrs[keys.SETTINGS]["colour"]
    try:
        open_study(spec_of_args(build_parser().parse_args([*base, "--colour", "3"])))
    except AutopeftError as exc:
        out["resumed"] = str(exc)
    with tempfile.TemporaryDirectory() as folder:
        shipped = json.loads(ship(spec, Path(folder)).read_text())
        out["shipped"] = shipped["colour"]
        out["loaded"] = StudySpec.from_dict(shipped).what.colour
    print(json.dumps(out))
    """
)


def test_a_dummy_field_is_validated_stored_compared_on_resume_and_shipped(tmp_path, tiny_model, data_dir):
    package = tmp_path / "package"
    for folder in ("autopeft", "tasks", "search_spaces", "objectives"):  # the package and the files it ships
        shutil.copytree(REPO / folder, package / folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec_py = package / "autopeft" / "study" / "spec.py"
    lines = spec_py.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("    trust_remote_code:"))
    spec_py.write_text("".join([*lines[:at], DUMMY, *lines[at:]]))  # the one place

    done = subprocess.run(
        [sys.executable, "-c", DRIVE, tiny_model, data_dir, str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={"PYTHONPATH": str(package), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["help"]  # a flag of search (and submit)
    assert out["invalid"] == "--colour must be at least 1, got 0"  # its check, one line naming the flag
    assert out["stored"] == 2 and out["settings"] == 2  # in the stored spec and the settings a resume compares
    assert "--colour" in out["resumed"] and "exists with other settings" in out["resumed"]
    assert out["shipped"] == 2 and out["loaded"] == 2  # the spec submit ships, read back as the job reads it


def test_the_copy_alone_has_the_dummy_field():
    from autopeft.study.spec import What

    assert "colour" not in What.model_fields  # the repository itself is untouched
