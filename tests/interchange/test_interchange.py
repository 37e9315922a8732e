"""Import and export: real Kernel Tuner caches, T4 documents and dataset folders, through the CLI."""

import gzip
import json
from pathlib import Path

import pytest

from agent.dataset import DatasetError, read_dataset
from agent.interchange import ImportFileError, import_path, read_batches
from agent.interchange.batch import guess_role
from tests.conftest import run_cli

DATA = Path(__file__).resolve().parents[1] / "data"
EXCERPT = DATA / "A100-convolution-excerpt.json.gz"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "kernel-tuner-hub"


def test_a_kernel_tuner_cache_imports_with_times_in_seconds_and_failures_by_kind(store):
    [outcome] = import_path(store, EXCERPT)
    assert (outcome.state, outcome.runs, outcome.device) == ("imported", 40, "NVIDIA A100-PCIE-40GB")
    rows = list(store.export_runs())
    statuses = sorted(r["status"] for r in rows)
    assert statuses.count("correct") == 35 and statuses.count("runtime") == 5
    raw = json.loads(gzip.decompress(EXCERPT.read_bytes()))
    first_key = next(k for k, v in raw["cache"].items() if not isinstance(v["time"], str))
    entry = raw["cache"][first_key]
    row = next(r for r in rows if all(r["config"][k] == entry[k] for k in raw["tune_params_keys"]))
    assert row["median_s"] == pytest.approx(entry["time"] / 1e3)
    assert row["samples"] == pytest.approx([t / 1e3 for t in entry["times"]])
    device = json.loads(store.devices()[0]["profile"])
    assert device["architecture"] == "ampere" and device["multiprocessors"] == 108
    assert import_path(store, EXCERPT)[0].state == "already imported"
    assert store.count("runs") == 40


def test_imported_parameters_get_roles_from_their_names():
    assert [guess_role(n) for n in ("block_size_x", "tile_size_y", "loop_unroll_factor_channel", "VWM",
                                    "MDIMC", "use_shmem", "num_warps", "num_stages")] == \
        ["block", "tile", "unroll", "vector", "block", "flag", "warps", "stages"]


def test_malformed_files_are_refused_whole_and_the_rest_of_the_batch_imports(tmp_path, cli_env):
    truncated = tmp_path / "truncated.json.gz"
    truncated.write_bytes(EXCERPT.read_bytes()[:2000])
    wrong_keys = tmp_path / "wrong_keys.json"
    wrong_keys.write_text(json.dumps({"cache": {"1": {"a": 1, "time": 1.0}}, "tune_params_keys": ["a"]}))
    string_time = tmp_path / "string_time.json"
    raw = json.loads(gzip.decompress(EXCERPT.read_bytes()))
    key = next(iter(raw["cache"]))
    raw["cache"][key]["time"] = "3.9"
    string_time.write_text(json.dumps(raw))
    result = run_cli("import", str(truncated), str(wrong_keys), str(string_time), str(EXCERPT), "--json",
                     env=cli_env)
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 4 and "Traceback" not in result.stderr
    assert "truncated" in errors[0] and "missing key(s) tune_params" in errors[1]
    assert "'3.9' is neither a number nor a known failure" in errors[2]
    assert "3 of 4 file(s) not imported" in errors[3]
    imported = json.loads(result.stdout)
    assert [(Path(r["path"]).name, r["runs"]) for r in imported] == [(EXCERPT.name, 40)]
    again = run_cli("runs", "--limit", "1000", "--json", env=cli_env)
    assert len(json.loads(again.stdout)) == 40  # the bad files stored nothing


@pytest.mark.slow
def test_t4_export_imports_back_into_another_store_unchanged(tmp_path, cli_env, cache_dir):
    tuned = run_cli("tune", "gemm", "--shape", "M=16,N=16,K=16", "--strategy", "random", "--budget", "6",
                    "--json", env=cli_env)
    assert tuned.returncode == 0, tuned.stderr
    tuning_id = json.loads(tuned.stdout)["tuning_id"]
    t4_file = tmp_path / "gemm.t4.json"
    exported = run_cli("export", "--format", "t4", "--tuning", str(tuning_id), "-o", str(t4_file), env=cli_env)
    assert exported.returncode == 0, exported.stderr
    document = json.loads(t4_file.read_text())
    assert document["schema_version"] == "1.0.0"
    assert {r["invalidity"] for r in document["results"]} <= {"correct", "compile", "runtime", "timeout",
                                                               "correctness", "constraints"}
    other = {**cli_env, "EDGETUNE_DB": str(tmp_path / "other.db")}
    imported = run_cli("import", str(t4_file), "--json", env=other)
    assert imported.returncode == 0, imported.stderr
    original = json.loads(run_cli("runs", "--tuning", str(tuning_id), "--limit", "100", "--json",
                                  env=cli_env).stdout)
    copied = json.loads(run_cli("runs", "--limit", "100", "--json", env=other).stdout)
    search = [r for r in original if r["phase"] == "search"]

    def key(rows):
        return sorted((r["config"], r["status"], r["median_s"], r["kernel_key"], r["device"]) for r in rows)

    assert key(copied) == key(search)


def test_t4_without_metadata_needs_kernel_device_and_shape(tmp_path):
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"schema_version": "1.0.0", "results": [
        {"configuration": {"x": 1}, "invalidity": "correct", "correctness": 1, "times": {},
         "measurements": [{"name": "time", "value": 2.5, "unit": "ms"}]}]}))
    with pytest.raises(ImportFileError, match="--kernel"):
        read_batches(bare)
    with pytest.raises(ImportFileError, match="--shape"):
        read_batches(bare, kernel="k")
    with pytest.raises(ImportFileError, match="--device"):
        read_batches(bare, kernel="k", shape={"N": 4})
    [batch] = read_batches(bare, kernel="k", shape={"N": 4}, device="W6600")
    assert batch.runs[0].time_s == pytest.approx(2.5e-3)
    assert batch.device_profile["architecture"] == "rdna2"


def test_kernel_tuner_export_is_a_cache_kernel_tuner_data_can_round_trip(tmp_path, store, cli_env):
    imported = run_cli("import", str(EXCERPT), env=cli_env)
    assert imported.returncode == 0, imported.stderr
    out = tmp_path / "cache.json"
    result = run_cli("export", "--format", "kernel-tuner", "--tuning", "1", "-o", str(out), env=cli_env)
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    original = json.loads(gzip.decompress(EXCERPT.read_bytes()))
    assert written["tune_params_keys"] == original["tune_params_keys"]
    assert set(written["cache"]) == set(original["cache"])
    for key, entry in original["cache"].items():
        assert written["cache"][key]["time"] == (entry["time"] if isinstance(entry["time"], str)
                                                 else pytest.approx(entry["time"]))


def test_a_dataset_folder_is_checked_before_it_is_read(tmp_path, store):
    import_path(store, EXCERPT)
    from agent.dataset import export_dataset

    export_dataset(store, tmp_path / "ds", name="excerpt")
    dataset = read_dataset(tmp_path / "ds")
    assert dataset.manifest["counts"]["records"] == 40 and len(dataset.cases()) == 1
    records = tmp_path / "ds" / "records.jsonl.gz"
    records.write_bytes(records.read_bytes()[:-20])
    with pytest.raises(DatasetError, match="SHA-256"):
        read_dataset(tmp_path / "ds")
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    manifest["version"] = 99
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="version 99"):
        read_dataset(tmp_path / "ds")


@pytest.mark.slow  # imports every public GPU cache (15 s)
@pytest.mark.skipif(not SHARED.is_dir(), reason="the public GPU files live beside the repository")
def test_every_public_gpu_file_imports(store):
    files = sorted(SHARED.rglob("*.json.gz"))
    outcomes = [o for f in files for o in import_path(store, f, origin_root=SHARED)]
    assert len(outcomes) == len(files) == 13
    assert all(o.state == "imported" for o in outcomes)
    assert store.count("runs") == sum(o.runs for o in outcomes) > 100_000
