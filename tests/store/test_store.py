import sqlite3
from datetime import datetime, timedelta, timezone
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
        assert applied == ["m001_initial", "m002_cores_and_imports", "m003_prediction",
                           "m004_outbox", "m005_daemon", "m006_backend", "m007_outbox_deferral", "m008_policy"]
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


def test_a_run_and_a_finished_tuning_enter_the_outbox_in_their_own_transaction(store: Store):
    tuning = start(store)
    with pytest.raises(StoreError):
        store.add_run(run(tuning + 999))  # the run is refused: no telemetry record either
    assert store.count("outbox") == 0
    run_id = store.add_run(run(tuning))
    store.finish_tuning(tuning, evaluations=1, wall_s=0.5, winner_run=run_id, winner_config={"A": 1},
                        winner_median_s=2.0, default_median_s=2.0, speedup=1.0, tie=False,
                        details={"cloud": "not configured"})
    batch = store.outbox_batch(10)
    assert [row["kind"] for row in batch] == ["run", "tuning"]
    assert batch[0]["key"].startswith("run:dev:") and batch[0]["key"].endswith(f":{run_id}")
    assert batch[0]["payload"]["data"]["config"] == {"A": 1} and batch[1]["payload"]["data"]["wall_s"] == 0.5


def test_imported_tunings_stay_out_of_the_outbox(store: Store):
    store.upsert_device("dev", {"name": "test"})
    store.upsert_kernel("k-1", "k", "hash", {"params": []}, "tests")
    tuning = store.start_tuning(device="dev", kernel_key="k-1", kernel="k", shape="N=1", target="native",
                                compiler="cc 12", strategy="import", budget="0", seed=0, origin="t4:file.json")
    store.add_runs([run(tuning)])
    store.finish_tuning(tuning, evaluations=1, wall_s=0.0, winner_run=None, winner_config=None,
                        winner_median_s=None, default_median_s=None, speedup=None, tie=False)
    assert store.count("outbox") == 0


def test_a_store_from_before_the_outbox_upgrades_and_keeps_its_runs(db_path: Path):
    with Store.open(db_path) as store:
        store.add_run(run(start(store)))
        for table in ("outbox", "dead_letter", "store_info"):
            store.db[table].drop()
        store.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm004_outbox'")
        store.db.conn.commit()
    with Store.open(db_path) as store:
        assert store.count("runs") == 1 and store.count("outbox") == 0  # nothing is backfilled
        store.add_run(run(1))
        assert store.count("outbox") == 1


def test_a_store_from_before_the_daemon_upgrades_and_keeps_its_best(db_path: Path):
    with Store.open(db_path) as store:
        tuning = start(store)
        run_id = store.add_run(run(tuning))
        store.finish_tuning(tuning, evaluations=1, wall_s=1.0, winner_run=run_id, winner_config={"A": 1},
                            winner_median_s=2.0, default_median_s=2.0, speedup=1.0, tie=False)
        store.db.execute("DROP INDEX queue_waiting")
        store.db["queue"].drop()
        store.db.execute("ALTER TABLE best DROP COLUMN stale")
        store.db.execute("ALTER TABLE tunings DROP COLUMN model_version")
        store.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm005_daemon'")
        store.db.conn.commit()
    with Store.open(db_path) as store:
        rows = store.best_dependencies("dev")
        found = [(r["kernel"], r["stale"], r["compiler"], r["model_version"]) for r in rows]
        assert found == [("k", None, "cc 12", None)]
        assert store.queue() == []


def test_a_store_from_before_backends_upgrades_its_results_to_c_and_records_the_backend_from_then_on(db_path: Path):
    with Store.open(db_path) as store:
        old_run = store.add_run(run(start(store)))
        for table, column in (("runs", "backend"), ("tunings", "backend"), ("outbox", "deferrals"),
                              ("outbox", "retry_at"), ("outbox", "deferred_reason")):
            store.db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        store.db.execute("DELETE FROM _sqlite_migrations WHERE name in ('m006_backend', 'm007_outbox_deferral')")
        store.db.conn.commit()
    with Store.open(db_path) as store:
        assert store.db["runs"].get(old_run)["backend"] == "c"
        tuning = store.start_tuning(device="dev", kernel_key="k-1", kernel="k", shape="N=2", target="native",
                                    compiler="triton 3.1", strategy="random", budget="10", seed=0, backend="triton")
        new_run = store.add_run(run(tuning, shape="N=2", backend="triton"))
        store.finish_tuning(tuning, evaluations=1, wall_s=0.5, winner_run=new_run, winner_config={"A": 1},
                            winner_median_s=2.0, default_median_s=2.0, speedup=1.0, tie=False)
        assert store.db["runs"].get(new_run)["backend"] == "triton"
        assert store.tunings(limit=1)[0]["backend"] == "triton"
        sent = {row["kind"]: row["payload"]["data"] for row in store.outbox_batch(10)}
        assert sent["run"]["backend"] == "triton" and sent["tuning"]["backend"] == "triton"
        assert run(1).backend == "c"


def test_a_deferred_record_stays_in_the_outbox_and_waits_longer_after_each_deferral(store: Store):
    tuning = start(store)
    store.add_run(run(tuning))
    store.add_run(run(tuning, config={"A": 2}))
    first, second = (row["key"] for row in store.outbox_batch(10))
    store.defer_outbox({first: "kind not read yet"}, base_s=100.0, cap_s=150.0)
    store.ack_outbox([second], {})
    assert store.outbox_batch(10) == [] and store.count("outbox") == 1 and store.count("dead_letter") == 0
    row = store.db["outbox"].rows_where("key = ?", [first]).__next__()
    assert row["deferrals"] == 1 and row["deferred_reason"] == "kind not read yet"
    later = (datetime.now(timezone.utc) + timedelta(seconds=101)).isoformat(timespec="milliseconds")
    assert [r["key"] for r in store.outbox_batch(10, due_before=later)] == [first]
    store.defer_outbox({first: "still not"}, base_s=100.0, cap_s=150.0)  # 200 s, capped at 150
    waits_until = store.db["outbox"].rows_where("key = ?", [first]).__next__()["retry_at"]
    assert later < waits_until < (datetime.now(timezone.utc) + timedelta(seconds=151)).isoformat()


def test_the_queue_keeps_one_waiting_request_per_case_and_gives_them_out_in_order(store: Store):
    case = dict(kernel_path=None, target="native", reason="test", requested_by="test")
    assert store.queue_request(kernel="a", shape="N=1", **case)
    assert not store.queue_request(kernel="a", shape="N=1", **case)  # a second hook run adds nothing
    assert store.queue_request(kernel="b", shape="N=1", **case)
    first = store.next_request()
    assert first["kernel"] == "a" and first["state"] == "running"
    assert store.queue_request(kernel="a", shape="N=1", **case)  # running is not waiting: a new request is taken
    store.finish_request(first["id"], state="queued")  # interrupted, but a newer request for it waits already
    assert [(r["kernel"], r["state"]) for r in store.queue()] == [("b", "queued"), ("a", "queued")]
    second = store.next_request()
    assert second["kernel"] == "b"
    assert store.recover_interrupted() == 1  # after a kill -9 the claimed request waits again
    assert [r["kernel"] for r in store.queue(states=("queued",))] == ["b", "a"]
    done = store.next_request()
    store.finish_request(done["id"], state="done", tuning_id=7)
    assert store.queue(states=("done",))[0]["tuning_id"] == 7
    with pytest.raises(ValueError):
        store.finish_request(done["id"], state="finished")


def test_pruning_the_outbox_keeps_the_newest_records_and_every_run(store: Store):
    tuning = start(store)
    for _ in range(5):
        store.add_run(run(tuning))
    assert store.prune_outbox(2) == 3
    assert store.count("outbox") == 2 and store.count("runs") == 5
    keys = [row["key"] for row in store.outbox_batch(10)]
    assert [key.rsplit(":", 1)[1] for key in keys] == ["4", "5"]


def test_a_request_the_daemon_keeps_dying_on_fails_after_three_crashes(store: Store):
    store.queue_request(kernel="a", shape="N=1", kernel_path=None, target="native", reason="t", requested_by="t")
    for crash in range(1, 4):
        request = store.next_request()
        assert request is not None and request["kernel"] == "a"
        assert store.recover_interrupted() == (1 if crash < 3 else 0)  # as after a kill -9 at start-up
    failed = store.queue(states=("failed",))
    assert len(failed) == 1 and "died during this request 3 times" in failed[0]["error"]
    assert store.next_request() is None
