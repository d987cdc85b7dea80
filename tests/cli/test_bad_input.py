"""The command line: help on every command, and one-line errors (exit 2, no traceback) for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autopeft.cli import main

COMMANDS = ["search", "pareto", "trials", "export", "sync", "ui"]


def autopeft(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autopeft.cli", *args], capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = autopeft(command, "--help")
    assert result.returncode == 0 and "usage: autopeft" in result.stdout


def test_budget_help_says_the_head_is_not_counted():
    assert "classification head is not counted" in " ".join(autopeft("search", "--help").stdout.split())


def bad_search(tmp_path, tiny_model, data_dir, capsys, **overrides):
    """Run ``autopeft search`` in this process (imports paid once) and return (exit status, stderr)."""
    args = {
        "--task": "rte",
        "--budget": "1%",
        "--model": tiny_model,
        "--data-dir": data_dir,
        "--runs-dir": str(tmp_path / "runs"),
        "--trials": "1",
    }
    args.update(overrides)
    flat = [x for key, value in args.items() if value is not None for x in (key, value)]
    try:
        status = main(["search", *flat])
    except SystemExit as exc:  # argparse errors
        status = exc.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"--budget": "lots"}, "--budget 'lots' is not a budget"),
        ({"--budget": "0"}, "must be greater than zero"),
        ({"--budget": "100%"}, "must be below 100%"),
        ({"--budget": "10"}, "but the smallest configuration of space 'default' needs"),
        ({"--task": "squad"}, "unknown task 'squad'"),
        ({"--trials": "0"}, "--trials must be at least 1"),
        ({"--model": "/no/such/model"}, "--model '/no/such/model': no such folder"),
        ({"--data-dir": "/no/such/glue"}, "data folder '/no/such/glue' does not exist"),
        ({"--space": "/no/such/space.yaml"}, "space file '/no/such/space.yaml' does not exist"),
        ({"--sampler": "grid"}, "--sampler 'grid' is unknown"),
        ({"--objectives": "metric,speed"}, "unknown objective 'speed'"),
        ({"--objectives": "params,neg_loss"}, "the list must start with 'metric' or 'neg_loss'"),
        ({"--storage": "postgresql://user:secret@127.0.0.1:1/db"}, "cannot be opened"),
        ({"--trials": "x"}, "invalid int value: 'x'"),
        ({"--reduction": "1"}, "--reduction must be > 1"),
        ({"--grace": "1"}, "--grace must be at least 2 entries"),
        ({"--first-rung": "half"}, "--first-rung: 'half' is not a fraction"),
        ({"--first-rung": "1/9,1/3"}, "--first-rung: one fraction (like 1/9 or 0.11)"),
        ({"--first-rung": "3/2"}, "--first-rung must be a fraction in (0, 1)"),
        ({"--first-rung": "1/2", "--first-rung-cap": "1/3"}, "--first-rung-cap must lie in [--first-rung, 1)"),
        ({"--status-quo": "nonsense"}, "--status-quo 'nonsense': not a baseline"),
        ({"--heartbeat-grace": "1"}, "--heartbeat-grace must be at least 3 seconds"),
        ({"--start-load": "2"}, "--start-load must be between 0 and 1"),
        ({"--start-load": "0.5", "--sampler": "random"}, "--start-load is botorch's quasi-random start"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(tmp_path, tiny_model, data_dir, capsys, overrides, message):
    status, err = bad_search(tmp_path, tiny_model, data_dir, capsys, **overrides)
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and "secret" not in err


def test_bad_input_from_the_installed_command_has_no_traceback(tmp_path):
    result = autopeft("search", "--task", "squad", "--budget", "1%", "--runs-dir", str(tmp_path))
    assert (
        result.returncode == 2
        and result.stderr.strip()
        == "autopeft: error: unknown task 'squad'; built-in tasks: cola, mrpc, rte, sst2, stsb, or the path of a task file (.yaml)"
    )


def test_a_bad_space_file_is_named(tmp_path, tiny_model, data_dir, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("name: x\nmethods:\n  lora:\n    modules: {choices: [query, mlp]}\n    rank: {choices: [2]}\n")
    status, err = bad_search(tmp_path, tiny_model, data_dir, capsys, **{"--space": str(space)})
    assert status == 2
    assert (
        f"{space}: methods.lora.modules.choices: 'mlp' is not a module of this bert model; allowed: query, key" in err
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("malformed", "malformed YAML at line 4, column 1"),
        ("unknown_key", "methods.lora.colour: unknown key"),
        ("missing_split", "rte.yaml: train: file"),
        ("tiny_train", "too few to hold out a selection part"),
        ("bad_label", "RTE/train.tsv row 1: label 'maybe' is not one of entailment, not_entailment"),
    ],
)
def test_bad_files_are_one_line_with_exit_2(tmp_path, tiny_model, data_dir, capsys, case, message):
    space = tmp_path / "space.yaml"
    space.write_text("name: x\nmethods:\n  lora:\n    modules: {choices: [query]}\n    rank: {choices: [2]}\n")
    overrides = {"--space": str(space)}
    if case == "malformed":
        space.write_text("name: x\nmethods:\n  lora: [query\n")
    elif case == "unknown_key":
        space.write_text(space.read_text() + "    colour: red\n")
    else:
        glue = tmp_path / "glue"
        (glue / "RTE").mkdir(parents=True)
        label = "maybe" if case == "bad_label" else "entailment"
        split = "dev" if case == "missing_split" else "train"  # a search reads train, never dev
        (glue / "RTE" / f"{split}.tsv").write_text(f"index\tsentence1\tsentence2\tlabel\n0\ta\tb\t{label}\n")
        overrides["--data-dir"] = str(glue)
    status, err = bad_search(tmp_path, tiny_model, data_dir, capsys, **overrides)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_missing_study_is_a_clear_error(tmp_path):
    result = autopeft("pareto", "--runs-dir", str(tmp_path))
    assert result.returncode == 2 and "no study storage at" in result.stderr


def test_spec_file_booleans_turn_options_on_and_off(tmp_path):
    from autopeft.cli import build_parser
    from autopeft.cli.search import spec_of_args

    spec = tmp_path / "spec.yaml"
    spec.write_text("task: rte\nbudget: 0.5%\nattention-dropout: false\ntrust-remote-code: true\n")
    loaded = spec_of_args(build_parser().parse_args(["search", "--spec", str(spec)]))
    assert loaded.what.training.attention_dropout is False and loaded.what.trust_remote_code is True
    given = build_parser().parse_args(["search", "--spec", str(spec), "--attention-dropout", "--budget", "1%"])
    overridden = spec_of_args(given)  # options given on the command line win over the file's
    assert overridden.what.training.attention_dropout is True and overridden.what.budget == "1%"
