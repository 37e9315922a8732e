"""edgetune collect: a real sweep into a real store, resumed after kill -9, exported as a dataset."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from agent.collect import Case, CollectOptions, case_configs, collect_case
from agent.dataset import read_dataset
from agent.hardware.targets import target_vector_bits
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Space, config_key

from .conftest import ROOT, TEST_KERNELS, run_cli
from .helpers import QUICK, committed_runs

pytestmark = pytest.mark.slow  # every test here runs real processes (tuning, a fleet service) for seconds

SPIN = str(TEST_KERNELS / "spin")
DISAGREE = str(TEST_KERNELS / "disagree")


def test_a_case_measures_its_whole_small_space_once_and_a_rerun_skips_it(store, profile, backend, cache_dir):
    problem = parse_shape(find_kernel(SPIN), None)
    options = CollectOptions(configs_per_case=50, measure=QUICK)
    first = collect_case(Case(problem, "native", 1), profile=profile, store=store, backend=backend,
                         cache_dir=cache_dir, options=options)
    legal = Space.build(problem, max_threads=1, vector_bits=target_vector_bits("native", profile)).size()
    assert (first.state, first.planned, first.measured_now, first.valid) == ("measured", legal, legal, legal)
    assert first.best_s < first.default_s  # REPEAT=1 beats the default REPEAT=32
    again = collect_case(Case(problem, "native", 1), profile=profile, store=store, backend=backend,
                         cache_dir=cache_dir, options=options)
    assert (again.state, again.measured_now) == ("skipped", 0)
    assert store.count("runs") == legal
    fresh = collect_case(Case(problem, "native", 1), profile=profile, store=store, backend=backend,
                         cache_dir=cache_dir, options=CollectOptions(configs_per_case=50, measure=QUICK,
                                                                     remeasure=True))
    assert fresh.measured_now == legal and store.count("runs") == legal  # replaced, not duplicated


def test_a_sample_is_the_same_on_every_run_and_always_holds_the_default():
    problem = parse_shape(find_kernel("gemm"), "small")
    space = Space.build(problem, max_threads=2, vector_bits=256)
    first, size = case_configs(space, 40, seed=0)
    second, _ = case_configs(space, 40, seed=0)
    other, _ = case_configs(space, 40, seed=1)
    assert size == space.size() > 40
    assert [config_key(c) for c in first] == [config_key(c) for c in second]
    assert {config_key(c) for c in first} != {config_key(c) for c in other}
    assert config_key(space.default()) in {config_key(c) for c in first}
    assert all(space.is_valid(c) for c in first)
    # Cases at one core draw mostly the same configurations: their builds are shared.
    single, _ = case_configs(Space.build(problem, max_threads=1, vector_bits=256), 40, seed=0)
    shared = {config_key(c) for c in single} & {config_key(c) for c in first}
    assert len(shared) >= 15


def test_collect_reports_a_kernel_no_configuration_of_which_is_correct_and_still_collects_the_rest(
        tmp_path, cli_env):
    out = tmp_path / "ds"
    result = run_cli("collect", "--kernel", DISAGREE, "--kernel", SPIN, "--shapes", "small", "--target", "native",
                     "--cores", "1", "--export", str(out), env=cli_env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no valid configuration" in lines[0] and "disagree" in lines[0]
    assert "Traceback" not in result.stderr
    dataset = read_dataset(out)
    statuses = {(r["kernel"], r["status"]) for r in dataset.records}
    assert ("disagree", "correctness") in statuses and ("spin", "correct") in statuses
    assert ("disagree", "correct") not in statuses
    assert dataset.manifest["commands"][0].startswith("edgetune collect")


def test_collect_killed_with_sigkill_resumes_without_measuring_anything_twice(tmp_path, cache_dir):
    db = tmp_path / "collect.db"
    args = ["collect", "--kernel", "gemm", "--shapes", "M=24,N=24,K=24", "--target", "native", "--cores", "2",
            "--configs", "90", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGETUNE_DB": str(db), "EDGETUNE_CACHE": str(cache_dir)}
    process = subprocess.Popen([sys.executable, "-m", "agent.cli", *args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while committed_runs(db) < 20 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        assert process.poll() is None, "collection ended before it could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = committed_runs(db)
    assert 20 <= before < 90
    result = run_cli(*args, env={"EDGETUNE_DB": str(db), "EDGETUNE_CACHE": str(cache_dir)})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["results"][0]["state"] == "resumed"
    assert summary["results"][0]["measured_now"] == 90 - before
    conn = sqlite3.connect(db)
    total, distinct = conn.execute("select count(*), count(distinct config) from runs").fetchone()
    assert total == distinct == 90
    assert conn.execute("select state from tunings").fetchall() == [("finished",)]
