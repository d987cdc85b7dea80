"""Shared fixtures: the local GLUE data, a tiny random BERT saved to disk, quiet libraries."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The GLUE folder: ``$AUTOPEFT_DATA_DIR`` or ``../shared/data/glue`` beside the checkout."""
    path = Path(os.environ.get("AUTOPEFT_DATA_DIR", REPO.parent / "shared" / "data" / "glue"))
    assert (path / "RTE" / "train.tsv").is_file(), f"GLUE data not found at {path}; set AUTOPEFT_DATA_DIR"
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 3-layer BERT (hidden 32) with the default model's tokenizer, on disk.

    Like the default model's checkpoint, it holds the encoder and no classification head: every
    task's head is initialised fresh, from the trial's seed.
    """
    from transformers import BertConfig, BertModel

    from autopeft.models import default_model, load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer(default_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_info(tiny_model: str):
    """The tiny model's :class:`BackboneInfo` for a binary task."""
    from autopeft.models import backbone_info

    return backbone_info(tiny_model, 2)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_bin(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    """A private PostgreSQL server on loopback (Debian's ``postgresql`` package), started and stopped at will.

    Attributes:
        url: its ``autopeft`` database's URL (password ``hunter2``: trust authentication ignores it).
    """

    def __init__(self) -> None:
        import shutil
        import tempfile

        initdb, self.pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if not (initdb and self.pg_ctl):
            pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; .ci/run does)")
        self.root = Path(
            tempfile.mkdtemp(prefix="autopeft-pg-")
        )  # not under pytest's root-only tmp: the server reads it
        self.data, sockets = self.root / "data", self.root / "sock"
        sockets.mkdir()
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root: use the package's postgres user
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser: cannot start PostgreSQL")
            self.prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
            shutil.chown(sockets, "postgres")
            self.root.chmod(0o755)
        self.port = _free_port()
        self.options = f"-p {self.port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth", "trust")
        self.start()
        createdb = _postgres_bin("createdb") or "createdb"
        self._run(createdb, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "autopeft")
        self.url = f"postgresql://postgres:hunter2@127.0.0.1:{self.port}/autopeft"

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        """Start the server (again, on the same port and data)."""
        self._run(
            self.pg_ctl, "-D", str(self.data), "-o", self.options, "-l", str(self.root / "server.log"), "-w", "start"
        )

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut)."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        """Stop the server and remove its files."""
        import shutil

        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """A private PostgreSQL server on loopback for this test session (Debian's ``postgresql`` package)."""
    server = PostgresServer()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture()
def postgres_server():
    """A private PostgreSQL server of this test's own, which the test may stop and start."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


def ray_command() -> str | None:
    """The ``ray`` command of this Python's environment (beside ``sys.executable``), else the one on ``PATH``."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which("ray")


@contextlib.contextmanager
def ray_head(*options: str, env: dict[str, str]):
    """A Ray head of this test's own on loopback (``ray start --head --block``), stopped afterwards.

    Stopping signals only this head's ``ray start`` process, which takes down the processes it
    started: ``ray stop`` would kill every Ray on the machine, a user's running search included.

    Args:
        options: further ``ray start`` options (ports, dashboard).
        env: its environment (the authentication mode).
    """
    ray = ray_command()
    assert ray is not None, "no `ray` command beside this Python nor on PATH"
    # Ports with fixed defaults are drawn free, so that another Ray on this machine (a user's search) cannot
    # hold one of them: the dashboard agent then fails to start and the job server takes no job.
    fixed = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "ray-client-server-port")  # fmt: skip
    free = [f"--{name}={_free_port()}" for name in fixed if not any(o.startswith(f"--{name}") for o in options)]
    command = [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2", *options, *free]
    head = subprocess.Popen(
        [*command, "--disable-usage-stats"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in head.stdout], daemon=True).start()
    deadline, seen = time.monotonic() + 180, []
    try:
        while not any("block forever" in line for line in seen):  # printed once every process is up
            assert head.poll() is None, "ray start exited: " + "".join(seen)[-3000:]
            assert time.monotonic() < deadline, "ray start did not come up in 180 s: " + "".join(seen)[-3000:]
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        yield
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=30)


@pytest.fixture()
def ray_cluster():
    """A Ray head started with ``ray start`` on loopback (token auth off), stopped afterwards."""
    port = _free_port()
    with ray_head(f"--port={port}", "--include-dashboard=false", env={**os.environ, "RAY_AUTH_MODE": "disabled"}):
        yield f"127.0.0.1:{port}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under pytest-xdist, a worker hands its fault tally to the controller, which prints the sum."""
    from faults.tally import TALLY

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_tally"] = dict(TALLY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """The controller adds up what each xdist worker's faults did (see ``pytest_sessionfinish``)."""
    from faults.tally import TALLY

    for key, value in getattr(node, "workeroutput", {}).get("fault_tally", {}).items():
        TALLY[key] += value


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault-injection suite's line (``tests/faults``): what its faults did to the stores, summed up."""
    from faults.tally import TALLY

    if TALLY["faults"]:
        terminalreporter.write_line(" ".join(f"{key}={value}" for key, value in TALLY.items()))
