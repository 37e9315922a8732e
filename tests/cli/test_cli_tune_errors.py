"""`edgetune tune` when nothing it tried works: a non-zero exit with one line, and every run kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import TEST_KERNELS, run_cli


@pytest.mark.slow
@pytest.mark.parametrize("as_json", [False, True])
def test_a_tuning_where_every_configuration_fails_exits_1_and_keeps_the_runs(cli_env, tmp_path: Path,
                                                                            as_json: bool) -> None:
    # The faulty test kernel limited to failing modes, the default among them: nothing can win.
    folder = tmp_path / "all_fail"
    shutil.copytree(TEST_KERNELS / "faulty", folder)
    toml = folder / "kernel.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace('values = ["ok", "crash", "abort", "hang", "wrong", "oob", "clobber", "compile_error", "slow"]',
                        'values = ["crash", "wrong", "compile_error"]').replace('default = "slow"',
                                                                                'default = "compile_error"')
    toml.write_text(text, encoding="utf-8")
    result = run_cli("tune", str(toml), "--strategy", "exhaustive", *(["--json"] if as_json else []), env=cli_env)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no valid configuration of faulty" in lines[0] and "Traceback" not in result.stderr
    assert "1 compile, 1 correctness, 1 runtime" in lines[0]
    if as_json:
        assert json.loads(result.stdout)["winner"] is None  # the result is still there for a script to read
    runs = json.loads(run_cli("runs", "--json", env=cli_env).stdout)
    assert sorted(r["status"] for r in runs) == ["compile", "correctness", "runtime"]
