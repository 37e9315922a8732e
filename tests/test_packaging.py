"""The Debian packaging in packaging/: systemd units, the default config, the update hooks.

The .deb itself is not built here (minutes); ``packaging/test-deb.sh`` builds it, installs it
into a fresh Debian chroot and runs edgetune there. These tests check what can be checked in
seconds: the units verify cleanly and are hardened, the hook scripts map edgetune's exit codes
to what each updater expects, and the shipped config has every documented key.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"
UNITS = ("edgetune.service", "edgetune-update.service")
INSTALLED_BIN = "/opt/edgetune/venv/bin/edgetune"
# systemd-analyze security's overall exposure: 0 is best, 10 worst; "OK" is below 5. The
# units score 1.5 (edgetune.service) and 0.6 (edgetune-update.service) with systemd 252.
MAX_EXPOSURE = {"edgetune.service": 2.0, "edgetune-update.service": 1.0}

HOOKS = {
    "plain": PACKAGING / "hooks" / "edgetune-post-update",
    "mender": PACKAGING / "hooks" / "mender" / "ArtifactCommit_Leave_50_edgetune",
    "rauc": PACKAGING / "hooks" / "rauc" / "post-install",
    "swupdate": PACKAGING / "hooks" / "swupdate" / "postupdate.sh",
}


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze") or ("/usr/bin/systemd-analyze"
                                               if os.access("/usr/bin/systemd-analyze", os.X_OK) else None)
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def _checkout_edgetune() -> Path:
    """The edgetune command of the venv running the tests (the units' ExecStart needs a real file)."""
    command = Path(sys.executable).parent / "edgetune"
    assert command.exists(), f"{command} is missing: install the checkout into its venv (make test)"
    return command


def _units_for_checkout(tmp_path: Path) -> dict[str, Path]:
    """Copies of the units whose ExecStart is this checkout's edgetune instead of /opt/...'s."""
    edgetune = str(_checkout_edgetune())
    copies = {}
    for name in UNITS:
        text = (PACKAGING / name).read_text(encoding="utf-8")
        assert f"ExecStart={INSTALLED_BIN} " in text, f"{name}: ExecStart is not {INSTALLED_BIN}"
        path = tmp_path / name
        path.write_text(text.replace(INSTALLED_BIN, edgetune), encoding="utf-8")
        copies[name] = path
    return copies


def _unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (PACKAGING / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_units_verify_without_any_warning(tmp_path):
    tool = _systemd_analyze()
    units = _units_for_checkout(tmp_path)
    result = subprocess.run([tool, "verify", "--man=no", *map(str, units.values())],
                            capture_output=True, text=True, timeout=120)
    # systemd-analyze verify exits 0 on an unknown key or a bad value ("..., ignoring."), so
    # any output at all is a failure.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        f"exit {result.returncode}\n{result.stdout}{result.stderr}")


def test_verify_catches_a_typo(tmp_path):
    """The check above would notice a misspelt key: systemd-analyze reports it (exit 0 or not)."""
    tool = _systemd_analyze()
    unit = _units_for_checkout(tmp_path)["edgetune.service"]
    unit.write_text(unit.read_text(encoding="utf-8").replace("ProtectClock=yes", "ProtectClok=yes"),
                    encoding="utf-8")
    result = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120)
    assert "ProtectClok" in result.stdout + result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_security_exposure(tmp_path, name):
    tool = _systemd_analyze()
    unit = _units_for_checkout(tmp_path)[name]
    result = subprocess.run([tool, "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout + result.stderr)
    assert match, f"no exposure level in:\n{result.stdout}{result.stderr}"
    assert float(match.group(1)) <= MAX_EXPOSURE[name], match.group(0)


def test_service_settings_the_daemon_relies_on():
    service = _unit_settings("edgetune.service")
    for key, value in {
        "Type": "notify", "NotifyAccess": "main", "ExecStart": f"{INSTALLED_BIN} daemon",
        "ExecReload": "/bin/kill -HUP $MAINPID", "Restart": "on-failure", "User": "edgetune",
        "Group": "edgetune", "StateDirectory": "edgetune", "CacheDirectory": "edgetune",
        "Environment": "EDGETUNE_CONFIG=/etc/edgetune/config.toml", "Nice": "19",
        "IOSchedulingClass": "idle", "CapabilityBoundingSet": "", "UMask": "0027",
        "WantedBy": "multi-user.target",
    }.items():
        assert service.get(key) == [value], f"{key}: {service.get(key)}"
    assert "WatchdogSec" in service and "MemoryMax" in service
    # The probe reads device nodes and /proc/cpuinfo; the daemon loads ctypes callbacks and
    # kernels it compiles into the cache: these would break it.
    for forbidden in ("PrivateDevices", "DevicePolicy", "ProcSubset", "MemoryDenyWriteExecute", "NoExecPaths"):
        assert forbidden not in service, forbidden
    update = _unit_settings("edgetune-update.service")
    for key, value in {
        "Type": "oneshot", "ConditionNeedsUpdate": "/var", "DefaultDependencies": "no",
        "ExecStart": f"{INSTALLED_BIN} hook post-update", "User": "edgetune",
        "Environment": "EDGETUNE_CONFIG=/etc/edgetune/config.toml", "WantedBy": "sysinit.target",
    }.items():
        assert update.get(key) == [value], f"{key}: {update.get(key)}"
    assert "systemd-update-done.service" in update["Before"][0].split()


def test_default_config_has_every_key():
    config = tomllib.loads((PACKAGING / "config.toml").read_text(encoding="utf-8"))
    assert config["paths"] == {"db": "/var/lib/edgetune/edgetune.db", "cache": "/var/cache/edgetune"}
    assert config["daemon"] == {
        "preset": "mobilenet-v2", "first_boot_budget": "20m", "evaluations": 5, "busy_cpu_percent": 60,
        "poll_interval": "60s", "upload_interval": "1h", "outbox_max_records": 100000,
    }
    # No fleet unless configured: an empty [fleet] table would be a configuration error.
    assert "fleet" not in config
    assert (Path(__file__).resolve().parents[1] / "profiles" / "workloads" / "mobilenet-v2.toml").exists()


def test_default_config_is_accepted_by_settings(monkeypatch):
    from agent.settings import FleetSettings, Settings

    monkeypatch.setenv("EDGETUNE_CONFIG", str(PACKAGING / "config.toml"))
    for variable in ("EDGETUNE_DB", "EDGETUNE_CACHE", "EDGETUNE_MODELS", "EDGETUNE_FLEET_URL",
                     "EDGETUNE_FLEET_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    settings = Settings.from_environ()
    assert settings.db_path == Path("/var/lib/edgetune/edgetune.db")
    assert settings.cache_dir == Path("/var/cache/edgetune")
    assert FleetSettings.from_environ() is None


def test_build_script_is_executable_and_parses():
    script = PACKAGING / "build-deb.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    tester = PACKAGING / "test-deb.sh"
    assert tester.stat().st_mode & stat.S_IXUSR
    subprocess.run(["bash", "-n", str(tester)], check=True, timeout=30)
    for script in ("postinst", "prerm", "postrm"):
        path = PACKAGING / "debian" / script
        assert path.stat().st_mode & stat.S_IXUSR
        subprocess.run(["sh", "-n", str(path)], check=True, timeout=30)
    assert "deb:" in (PACKAGING.parent / "Makefile").read_text(encoding="utf-8")


# --- hook scripts -------------------------------------------------------------------------


def _fake_edgetune(tmp_path: Path, code: int, message: str = "") -> tuple[Path, Path]:
    """An executable standing in for edgetune: records its arguments, prints, exits with code."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    calls = tmp_path / "calls"
    fake = tmp_path / "edgetune"
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n'
                    + (f'echo "{message}" >&2\n' if message else "")
                    + f"exit {code}\n", encoding="utf-8")
    fake.chmod(0o755)
    return fake, calls


def _run_hook(hook: str, tmp_path: Path, code: int, *args: str, message: str = "",
              **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    fake, calls = _fake_edgetune(tmp_path, code, message)
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EDGETUNE_BIN": str(fake),
               "EDGETUNE_HOOK_RETRY_DELAY": "0", "EDGETUNE_HOOK_STATE_DIR": str(tmp_path / "state"), **env}
    result = subprocess.run(["sh", str(HOOKS[hook]), *args], capture_output=True, text=True,
                            env=environ, timeout=60)
    lines = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
    return result, lines


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_scripts_are_posix_sh(hook):
    path = HOOKS[hook]
    assert path.stat().st_mode & stat.S_IXUSR, f"{path} is not executable"
    assert path.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(path)], check=True, timeout=30)
    if shutil.which("dash"):
        subprocess.run(["dash", "-n", str(path)], check=True, timeout=30)


def test_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    scripts = [*map(str, HOOKS.values()), *(str(PACKAGING / "debian" / s) for s in ("postinst", "prerm", "postrm"))]
    subprocess.run(["shellcheck", "--shell=sh", *scripts], check=True, timeout=60)
    subprocess.run(["shellcheck", str(PACKAGING / "build-deb.sh"), str(PACKAGING / "test-deb.sh")],
                   check=True, timeout=60)


# edgetune's exit status -> each hook's: 0 checked, 3 budget ran out (rest queued), 75 busy,
# 1 error, 2 usage. Only Mender has a "retry later" (21); nothing ever fails an update.
EXPECTED = {
    "plain": {0: 0, 3: 0, 1: 0, 2: 0, 70: 0},
    "mender": {0: 0, 3: 0, 75: 21, 1: 0, 2: 0, 70: 0},
    "rauc": {0: 0, 3: 0, 75: 0, 1: 0, 2: 0, 70: 0},
    "swupdate": {0: 0, 3: 0, 75: 0, 1: 0, 2: 0, 70: 0},
}


@pytest.mark.parametrize(("hook", "code", "expected"),
                         [(hook, code, expected) for hook, table in sorted(EXPECTED.items())
                          for code, expected in table.items()])
def test_hook_exit_code_mapping(tmp_path, hook, code, expected):
    result, calls = _run_hook(hook, tmp_path, code, message="store: 2 stale results")
    assert result.returncode == expected, result.stderr
    assert calls == ["hook post-update"]
    log = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(log) == 1, result.stderr  # one line, naming what happened
    assert "2 stale results" in log[0]
    if code not in (0, 3, 75):
        assert f"exit {code}" in log[0]
    assert result.stdout == ""


def test_plain_hook_passes_arguments_and_retries_a_busy_store(tmp_path):
    result, calls = _run_hook("plain", tmp_path, 0, "--wait", "--budget", "30")
    assert result.returncode == 0 and calls == ["hook post-update --wait --budget 30"]
    result, calls = _run_hook("plain", tmp_path / "busy", 75, EDGETUNE_HOOK_RETRIES="2")
    assert result.returncode == 0, result.stderr
    assert len(calls) == 3 and "busy" in result.stderr


def test_plain_hook_strict_mode_returns_edgetunes_status(tmp_path):
    for code in (0, 1, 3, 75):
        result, _ = _run_hook("plain", tmp_path / str(code), code, EDGETUNE_HOOK_STRICT="1",
                              EDGETUNE_HOOK_RETRIES="0")
        assert result.returncode == code


def test_mender_retries_are_bounded(tmp_path):
    """A store that stays busy gets Mender's retry (21) a bounded number of times, then 0, so the
    retry loop cannot run into Mender's retry timeout and fail the deployment."""
    codes = [_run_hook("mender", tmp_path, 75, EDGETUNE_MENDER_RETRIES="3")[0].returncode for _ in range(5)]
    assert codes == [21, 21, 21, 0, 21]
    # A successful check resets the count.
    assert _run_hook("mender", tmp_path, 0)[0].returncode == 0
    assert not (tmp_path / "state" / "mender-retries").exists()
    assert _run_hook("mender", tmp_path, 75, EDGETUNE_MENDER_RETRIES="3")[0].returncode == 21


def test_swupdate_hook_runs_the_chained_command(tmp_path):
    marker = tmp_path / "rebooted"
    result, calls = _run_hook("swupdate", tmp_path, 1, "touch", str(marker))
    assert result.returncode == 0 and marker.exists() and calls == ["hook post-update"]
    result, _ = _run_hook("swupdate", tmp_path, 0, "false")
    assert result.returncode == 1  # the chained command's own status


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_without_edgetune_does_not_fail(tmp_path, hook):
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EDGETUNE_BIN": str(tmp_path / "missing")}
    result = subprocess.run(["sh", str(HOOKS[hook])], capture_output=True, text=True, env=environ, timeout=60)
    assert result.returncode == 0 and "missing" in result.stderr
