import sqlite3
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.store import RunRecord, Store


def run(tuning_id: int, **overrides) -> RunRecord:
    fields = dict(tuning_id=tuning_id, device="dev", kernel_key="k-1", kernel="k", shape="N=1",
                  config={"A": 1}, target="native", compiler="cc 12", flags=("-O3",), strategy="random",
                  status="correct", samples=(1.0, 2.0, 3.0), median_s=2.0)
    fields.update(overrides)
    return RunRecord(**fields)


def start(store: Store) -> int:
    store.upsert_device("dev", {"name": "test"})
    store.upsert_kernel("k-1", "k", "hash", {"params": []}, "tests")
    return store.start_tuning(device="dev", kernel_key="k-1", kernel="k", shape="N=1", target="native",
                              compiler="cc 12", strategy="random", budget="10", seed=0)


def test_migrations_are_recorded_and_reopening_keeps_data(db_path: Path):
    with Store.open(db_path) as store:
        tuning = start(store)
        store.add_run(run(tuning))
    with Store.open(db_path) as store:
        assert store.count("runs") == 1
        applied = [r["name"] for r in store.db["_sqlite_migrations"].rows]
        assert applied == ["m001_initial", "m002_cores_and_imports", "m003_prediction"]
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_from_before_the_model_strategy_upgrades_and_keeps_its_runs(db_path: Path):
    with Store.open(db_path) as store:
        store.add_run(run(start(store)))
        # Make it the store an edgetune without m003 wrote.
        added = {"runs": ("source", "predicted_rank"),
                 "tunings": ("predict_s", "cloud_s", "compile_s", "benchmark_s", "confidence", "cloud",
                             "winner_source", "winner_predicted_rank", "note")}
        for table, columns in added.items():
            for column in columns:
                store.db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        store.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm003_prediction'")
        store.db.conn.commit()
    with Store.open(db_path) as store:
        rows = list(store.db["runs"].rows)
        assert len(rows) == 1 and rows[0]["source"] is None and rows[0]["predicted_rank"] is None
        assert {"predict_s", "confidence", "winner_source", "note"} <= set(store.db["tunings"].columns_dict)


def test_finish_records_the_winner_as_best_and_replaces_older_bests(store: Store):
    for median in (3.0, 1.5):
        tuning = start(store)
        run_id = store.add_run(run(tuning, median_s=median))
        store.finish_tuning(tuning, evaluations=1, wall_s=0.1, winner_run=run_id, winner_config={"A": 1},
                            winner_median_s=median, default_median_s=3.0, speedup=3.0 / median, tie=False)
    best = store.best()
    assert len(best) == 1 and best[0]["median_s"] == 1.5 and best[0]["speedup"] == 2.0


def test_invalid_status_is_refused_before_it_reaches_the_db():
    with pytest.raises(ValueError, match="status"):
        run(1, status="exploded")


def test_a_failed_write_leaves_earlier_runs_intact(store: Store):
    tuning = start(store)
    store.add_run(run(tuning))
    with pytest.raises(StoreError):
        store.add_run(run(tuning + 999))  # foreign key: no such tuning
    assert store.count("runs") == 1


def test_unwritable_path_is_a_store_error(tmp_path: Path):
    # A regular file where a directory should be: unwritable even for root (CI runs as root).
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the store"):
        Store.open(blocker / "sub" / "edgetune.db")


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path: Path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("my precious notes, not a database\n" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store.open(bogus)
    assert bogus.read_text().startswith("my precious notes")


def test_store_is_a_plain_sqlite_file_other_tools_can_read(db_path: Path):
    with Store.open(db_path) as store:
        start(store)
    conn = sqlite3.connect(db_path)
    assert conn.execute("select count(*) from tunings").fetchone()[0] == 1
