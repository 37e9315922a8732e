"""A tuning run killed with SIGKILL leaves a store that opens and keeps every committed run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.store import Store
from tests.conftest import ROOT, run_cli
from tests.helpers import committed_runs

pytestmark = pytest.mark.slow  # every test here runs real processes (tuning, a fleet service) for seconds


def start_long_tuning(db: Path, cache_dir: Path, stderr: int) -> subprocess.Popen:
    """An exhaustive GEMM tuning in its own process group: long enough to interrupt."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGETUNE_DB": str(db), "EDGETUNE_CACHE": str(cache_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "tune", "gemm", "--shape", "M=48,N=48,K=48", "--strategy", "exhaustive"],
        env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True, start_new_session=True,
    )


def test_kill_9_mid_tuning_loses_no_committed_run(tmp_path: Path, cache_dir: Path):
    db = tmp_path / "killed.db"
    process = start_long_tuning(db, cache_dir, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        seen = 0
        while seen < 12 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            seen = committed_runs(db)
        assert process.poll() is None, "the tuning run ended before it could be killed"
        assert seen >= 12, "the tuning run committed too few runs to test"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and its benchmark worker
        process.wait(timeout=30)

    with Store.open(db) as store:
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.count("runs") >= seen
        assert store.tunings()[0]["state"] == "running"  # killed: never marked finished
    # The same store takes the next run.
    result = run_cli("tune", "gemm", "--shape", "M=16,N=16,K=16", "--budget", "3", "--json",
                     env={"EDGETUNE_DB": str(db), "EDGETUNE_CACHE": str(cache_dir)})
    assert result.returncode == 0, result.stderr
    with Store.open(db) as store:
        assert store.count("runs") > seen
        assert store.tunings()[0]["state"] == "finished"


def test_sigterm_marks_the_session_interrupted_and_exits_130(tmp_path: Path, cache_dir: Path):
    db = tmp_path / "term.db"
    process = start_long_tuning(db, cache_dir, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while committed_runs(db) < 3 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "edgetune: interrupted"
    with Store.open(db) as store:
        assert store.tunings()[0]["state"] == "interrupted"
        assert store.count("runs") >= 3
