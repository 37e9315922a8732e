"""``edgetune hook post-update``: a changed kernel source, compiler or model marks exactly its results stale."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from agent.kernels.registry import BUILTIN_DIR
from agent.store import Store
from harness.daemon_process import write_config
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def kernels(tmp_path: Path) -> Path:
    """Copies of two built-in kernels in a folder of the user's, so a test can edit their sources."""
    folder = tmp_path / "kernels"
    for name in ("gemv", "softmax"):
        shutil.copytree(BUILTIN_DIR / name, folder / name)
    return folder


@pytest.fixture
def env(tmp_path: Path, cache_dir: Path) -> dict[str, str]:
    config = write_config(tmp_path / "config.toml", preset="")
    return {"EDGETUNE_DB": str(tmp_path / "state" / "edgetune.db"), "EDGETUNE_CACHE": str(cache_dir),
            "EDGETUNE_CONFIG": str(config)}


def tune(env: dict[str, str], kernel: Path) -> None:
    done = run_cli("tune", str(kernel), "--shape", "small", "--budget", "2", "--json", env=env)
    assert done.returncode == 0, done.stderr


def hook(env: dict[str, str], *args: str) -> tuple[int, dict]:
    done = run_cli("hook", "post-update", "--json", *args, env=env)
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, json.loads(done.stdout)


def best(env: dict[str, str]) -> dict[tuple[str, str], str | None]:
    with Store.open(env["EDGETUNE_DB"]) as store:
        return {(row["kernel"], row["kernel_key"]): row["stale"] for row in store.db.query("select * from best")}


def waiting(env: dict[str, str]) -> list[tuple[str, str]]:
    with Store.open(env["EDGETUNE_DB"]) as store:
        return [(row["kernel"], row["shape"]) for row in store.queue(states=("queued",))]


def test_a_changed_kernel_source_invalidates_exactly_its_results(env, kernels):
    tune(env, kernels / "gemv")
    tune(env, kernels / "softmax")
    code, report = hook(env)
    assert code == 0 and report["stale"] == [] and report["queued"] == 0 and report["fresh"] == 2
    before = best(env)
    assert list(before.values()) == [None, None]

    source = kernels / "gemv" / "gemv.c"
    source.write_text(source.read_text() + "\n/* firmware 2.1: same kernel, new build */\n")
    code, report = hook(env)
    assert code == 0 and report["fresh"] == 1 and report["queued"] == 1
    assert [(f["kernel"], f["reason"].split(" (")[0]) for f in report["stale"]] == [("gemv", "kernel source changed")]
    after = best(env)
    assert [key for key, stale in after.items() if stale] == [key for key in before if key[0] == "gemv"]
    assert waiting(env) == [("gemv", "M=13,N=151")]

    # Running the hook again (a retry, a power loss) queues nothing new.
    code, report = hook(env)
    assert report["queued"] == 0 and waiting(env) == [("gemv", "M=13,N=151")]

    # --wait re-tunes it inline: the new version has a fresh result, the old one stays stale, and
    # nothing is queued again.
    code, report = hook(env, "--wait", "--budget", "120s")
    assert code == 0 and [t["kernel"] for t in report["tuned"]] == ["gemv"] and report["left_queued"] == 0
    final = best(env)
    assert sum(1 for (kernel, _), stale in final.items() if kernel == "gemv" and stale is None) == 1
    code, report = hook(env)
    assert report["queued"] == 0 and waiting(env) == []


def test_a_new_compiler_invalidates_every_result_and_a_new_model_only_the_predicted_ones(env, kernels, tmp_path):
    tune(env, kernels / "gemv")
    done = run_cli("tune", str(kernels / "softmax"), "--shape", "small", "--strategy", "random", "--budget", "2",
                   env=env)
    assert done.returncode == 0, done.stderr

    models = tmp_path / "models"
    shutil.copytree(Path(__file__).resolve().parents[2] / "models", models,
                    ignore=shutil.ignore_patterns("data", "eval", "*teacher*"))
    calibration = json.loads((models / "confidence.json").read_text())
    (models / "confidence.json").write_text(json.dumps(calibration, indent=1))  # new bytes, a new version
    code, report = hook({**env, "EDGETUNE_MODELS": str(models)})
    assert code == 0
    assert [(f["kernel"], f["reason"].split(" (")[0]) for f in report["stale"]] == [("gemv", "model changed")]

    real = shutil.which("cc")
    wrapper = tmp_path / "bin" / "cc"
    wrapper.parent.mkdir()
    wrapper.write_text("#!/bin/sh\n"
                       "case \"$1\" in -dumpfullversion) echo 99.1.0; exit 0;; esac\n"
                       f"exec {real} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    code, report = hook({**env, "CC": str(wrapper)})
    reasons = sorted((f["kernel"], f["reason"].split(" (")[0]) for f in report["stale"])
    assert reasons == [("gemv", "compiler changed"), ("softmax", "compiler changed")]
    assert "-> cc 99.1.0" in report["stale"][0]["reason"]
    # With the original compiler and model back, the results match again and are not stale.
    code, report = hook(env)
    assert report["stale"] == [] and report["fresh"] == 2 and all(s is None for s in best(env).values())


def test_the_preset_layers_without_results_are_queued_most_important_first(env, tmp_path):
    from harness.daemon_process import write_preset

    preset = write_preset(tmp_path / "p.toml", [("gemv", "small", 1.0), ("transpose", "small", 3.0)])
    write_config(Path(env["EDGETUNE_CONFIG"]), preset=str(preset))
    code, report = hook(env)
    assert code == 0 and [f["kernel"] for f in report["missing"]] == ["transpose", "gemv"]
    assert waiting(env) == [("transpose", "M=69,N=133"), ("gemv", "M=13,N=151")]
    code, report = hook(env, "--wait", "--budget", "1s")  # too short for both: the rest stays queued
    assert code == 3 and report["left_queued"] >= 1


def test_a_request_that_cannot_be_tuned_fails_alone_and_a_bad_preset_layer_is_skipped(env, tmp_path):
    from harness.daemon_process import write_preset

    preset = write_preset(tmp_path / "p.toml", [("nonesuch", "small", 2.0), ("gemv", "small", 1.0)])
    write_config(Path(env["EDGETUNE_CONFIG"]), preset=str(preset))
    with Store.open(env["EDGETUNE_DB"]) as store:  # a request whose shape no longer fits the kernel
        store.queue_request(kernel="softmax", kernel_path=None, shape="C=0,R=0", target="native", reason="test",
                            requested_by="test")
    code, report = hook(env, "--wait")
    assert code == 0 and len(report["problems"]) == 1 and "nonesuch" in report["problems"][0]
    assert [t["kernel"] for t in report["tuned"]] == ["gemv"]
    assert [f["kernel"] for f in report["failed"]] == ["softmax"] and report["left_queued"] == 0


def test_a_locked_store_exits_75_and_usage_errors_exit_2(env, tmp_path):
    db = Path(env["EDGETUNE_DB"])
    Store.open(db).close()
    holder = sqlite3.connect(db)
    holder.execute("begin exclusive")
    try:
        done = run_cli("hook", "post-update", "--lock-timeout", "0.5", env=env)
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 75 and done.stderr.count("\n") == 1 and "try again later" in done.stderr
    usage = run_cli("hook", "post-update", "--budget", "10s", env=env)
    assert usage.returncode == 2 and "--budget needs --wait" in usage.stderr
    Path(env["EDGETUNE_CONFIG"]).write_text("[daemon]\nevaluations = 0\n")
    bad = run_cli("hook", "post-update", env=env)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "evaluations" in bad.stderr


def _reachable_by_others(path: Path) -> bool:
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in [path, *path.parents])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to the service user needs root")
@pytest.mark.skipif(not _reachable_by_others(Path(sys.base_prefix)) or not _reachable_by_others(Path(sys.prefix)),
                    reason="this Python lives where other users cannot read it (e.g. /root/.pyenv); "
                           "packaging/test-deb.sh checks the same in a Debian chroot")
def test_root_acts_as_the_owner_of_the_state_folder():
    # Outside pytest's root-only temporary folder, so that the service user can reach it.
    base = Path(tempfile.mkdtemp(prefix="edgetune-service-"))
    try:
        base.chmod(0o755)
        state, cache = base / "state", base / "cache"
        nobody = 65534
        for path in (state, cache):
            path.mkdir()
            os.chown(path, nobody, nobody)
        config = write_config(base / "config.toml", preset="")
        config.chmod(0o644)
        service_env = {"EDGETUNE_DB": str(state / "edgetune.db"), "EDGETUNE_CACHE": str(cache),
                       "EDGETUNE_CONFIG": str(config)}
        done = run_cli("hook", "post-update", env=service_env)
        assert done.returncode == 0, done.stderr
        owners = {path.name: path.stat().st_uid for path in state.iterdir()}
        assert "edgetune.db" in owners and set(owners.values()) == {nobody}, owners
        status = run_cli("status", "--json", env=service_env)
        assert status.returncode == 0 and {p.stat().st_uid for p in state.iterdir()} == {nobody}
    finally:
        shutil.rmtree(base)


def test_status_before_the_daemon_ever_ran_creates_nothing(env):
    done = run_cli("status", env=env)
    assert done.returncode == 0 and "none yet" in done.stdout and "has not run" in done.stdout
    as_json = json.loads(run_cli("status", "--json", env=env).stdout)
    assert as_json["store_exists"] is False and as_json["model"]["version"]
    assert not Path(env["EDGETUNE_DB"]).exists()
