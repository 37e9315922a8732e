"""The command line as a user meets it: help, output, and one-line errors that lose nothing."""

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agent.cli import cli
from tests.conftest import ROOT, TEST_KERNELS, run_cli

COMMANDS = sorted(cli.commands)


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert cli.commands[name].help, f"{name} has no help text"
        assert f"edgetune {name}" in readme, f"README does not mention `edgetune {name}`"
    result = run_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_runs(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of ``group``, as the words a user types after ``edgetune``."""
    paths = []
    for name, command in sorted(group.commands.items()):
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


ALL_COMMANDS = _command_paths(cli)


def test_the_command_tree_includes_the_subcommand_groups():
    assert {("fleet", "serve"), ("fleet", "pull"), ("queue", "add"), ("hook", "post-update")} <= set(ALL_COMMANDS)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_and_subcommand_has_help(path):
    command: click.Command = cli
    for word in path:
        assert isinstance(command, click.Group)
        command = command.commands[word]
    assert (command.help or "").strip(), f"edgetune {' '.join(path)} has no help text"
    assert f"edgetune {' '.join(path)}" in (ROOT / "README.md").read_text(), \
        f"README does not mention `edgetune {' '.join(path)}`"
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="edgetune")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: edgetune {' '.join(path)} ")


def test_probe_json(cli_env):
    result = run_cli("probe", "--json", "--no-bandwidth", env=cli_env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["logical_cores"] >= 1 and re.fullmatch(r"[0-9a-f]{16}", data["fingerprint"])


def test_probe_of_a_shipped_profile(cli_env):
    result = run_cli("probe", "--profile", "raspberry-pi-5", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["simd_isa"] == "neon"


@pytest.mark.slow
def test_tune_then_list_best_runs_and_kernels(cli_env):
    # Hot caches, as in test_tuner: flushed, REPEAT=1 and 4 are too close for a search test.
    result = run_cli("tune", str(TEST_KERNELS / "spin"), "--strategy", "exhaustive", "--cache", "hot", "--json",
                     env=cli_env)
    assert result.returncode == 0, result.stderr
    tuned = json.loads(result.stdout)
    assert tuned["winner"]["config"]["REPEAT"] == 1 and tuned["speedup"] > 1
    best = json.loads(run_cli("best", "--json", env=cli_env).stdout)
    assert [row["kernel"] for row in best] == ["spin"]
    runs = json.loads(run_cli("runs", "--json", "--limit", "100", env=cli_env).stdout)
    assert len(runs) >= 12 and all(isinstance(r["samples"], list) for r in runs)
    kernels = json.loads(run_cli("kernels", "--json", env=cli_env).stdout)
    assert any(k["name"] == "gemm" and k["valid_configs"] >= 300 for k in kernels)
    text = run_cli("tune", str(TEST_KERNELS / "spin"), "--config", "REPEAT=1", env=cli_env)
    assert text.returncode == 0 and "speed-up" in text.stdout and "winner" in text.stdout


@pytest.fixture
def broken_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "broken" / "kernel.toml"
    spec.parent.mkdir()
    spec.write_text('name = "broken"\nsource = "x.c\n')
    return spec


BAD_INPUTS = [
    (["tune", "nosuchkernel"], "unknown kernel 'nosuchkernel'"),
    (["tune", "gemm", "--config", "NOPE=1"], "no parameter(s) NOPE"),
    (["tune", "gemm", "--config", "BM=7"], "BM=7 is outside the space"),
    (["tune", "gemm", "--shape", "M=64,N=64"], "missing K"),
    (["tune", "gemm", "--shape", "M=64,N=64,K=64,Z=1"], "no dimension(s) Z"),
    (["tune", "gemm", "--strategy", "annealing"], "unknown strategy 'annealing'"),
    (["tune", "gemm", "--budget", "lots"], "budget 'lots'"),
    (["tune", "gemm", "--target", "-fplugin=evil.so"], "not a valid -march value"),
    (["tune", "gemm", "--target", "pentium9000"], "cannot build for -march=pentium9000"),
    (["probe", "--profile", "nosuchdevice"], "nosuchdevice"),
    (["collect", "--kernel", "gemm", "--shapes", "M=60000,N=60000,K=60000"], "GiB of arrays"),
    (["collect", "--cores", "0"], "core counts must be positive"),
    (["collect", "--cores", "4096"], "hardware threads"),
    (["collect", "--preset", "nosuchpreset"], "unknown workload preset 'nosuchpreset'"),
    (["collect", "--kernel", "gemm", "--target", "pentium9000"], "cannot build for -march=pentium9000"),
    (["import", "/nonexistent/cache.json"], "no such file"),
    (["export", "--format", "t4", "--tuning", "999"], "0 tuning sessions match"),
    (["export", "--format", "dataset"], "needs --output"),
]


@pytest.mark.slow
def test_bad_input_gets_one_line_and_loses_nothing(cli_env, broken_spec: Path, tmp_path: Path):
    assert run_cli("tune", str(TEST_KERNELS / "spin"), "--budget", "2", env=cli_env).returncode == 0
    before = json.loads(run_cli("runs", "--json", "--limit", "1000", env=cli_env).stdout)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cases = [
        *BAD_INPUTS,
        (["tune", str(broken_spec)], "TOML syntax error"),
        (["--db", str(blocker / "x.db"), "best"], "cannot create the store"),
    ]
    for args, message in cases:
        result = run_cli(*args, env=cli_env)
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stderr
    missing_cc = run_cli("tune", "gemm", env={**cli_env, "CC": "/nonexistent/cc"})
    assert missing_cc.returncode == 1 and "C compiler '/nonexistent/cc' not found" in missing_cc.stderr
    after = json.loads(run_cli("runs", "--json", "--limit", "1000", env=cli_env).stdout)
    assert after == before
