"""``autopeft ui`` run as a user runs a console script that is not activated: by absolute path, with a ``PATH``
that lacks the environment's folder. The ``mlflow`` command is found beside the interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def test_the_console_script_by_absolute_path_serves_the_ui_without_the_environment_on_path(tmp_path):
    script = Path(sys.executable).parent / "autopeft"
    assert script.is_file(), "the console script is installed beside the interpreter"
    runs = tmp_path / "runs"
    runs.mkdir()
    MlflowClient(f"sqlite:///{runs}/mlflow.db").create_experiment("a-study")  # a store to show
    port = free_port()
    bare = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    server = subprocess.Popen(
        [str(script), "ui", "--runs-dir", str(runs), "--port", str(port)],
        env=bare, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        status, deadline = None, time.monotonic() + 120
        while status is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    status = response.status
            except OSError:
                time.sleep(1)
        assert status == 200, server.stderr.read() if server.poll() is not None else "no answer in 120 s"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
