"""``edgetune daemon``: probe, bring this device's results up to date, then wait for work.

The loop, in order of what it does:

1. Lower its own priority; tell systemd it is starting (EXTEND_TIMEOUT_USEC) and probe the
   hardware; READY=1.
2. Check the stored results against what they depend on (:mod:`.dependencies`): stale ones
   and preset layers with no result are queued, most important first. The first such burst
   may take ``first_boot_budget``; what is left after that is tuned one request per
   ``poll_interval``.
3. Work the queue, one request per tuning, pausing while other processes keep the CPUs busy.
4. Idle: upload the outbox when a fleet is configured and it is due, free the model's memory,
   and sleep until the next poll (no CPU in between).

Signals: SIGTERM (systemd's stop) abandons the current candidate at once; the tuning is
marked interrupted with every finished run kept, the request goes back in line, and the
process exits 0 after STOPPING=1. SIGHUP reloads the config file. SIGUSR1 looks at the queue now.
A watchdog thread sends WATCHDOG=1 at half of ``$WATCHDOG_USEC`` while the main loop shows progress.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.errors import EdgetuneError
from agent.settings import FleetSettings, Settings
from agent.store import Store, utc_now

from . import notify as sd
from .config import DaemonSettings
from .dependencies import Current, refresh
from .politeness import lower_priority, others_cpu_percent
from .work import RequestRunner

__all__ = ["Daemon", "Stopping", "run_daemon"]

STALL_LIMIT_S = 120.0  # no progress for this long and the watchdog pings stop (systemd restarts us)
EXTEND_USEC = 90_000_000  # asked for before each start-up step that may be slow


class Stopping(BaseException):
    """Raised in the main thread by SIGTERM while it works: unwinds like Ctrl-C, then exits 0."""


def log(message: str) -> None:
    """One line to stderr (the journal under systemd)."""
    print(f"edgetune daemon: {message}", file=sys.stderr, flush=True)


@dataclass
class _Signals:
    stop: bool = False
    reload: bool = False
    interruptible: bool = False  # raise Stopping on SIGTERM (only while working, never while idle)
    wake: threading.Event = field(default_factory=threading.Event)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGUSR1, lambda *_: self.wake.set())

    def _on_term(self, signum: int, frame: object) -> None:
        first = not self.stop
        self.stop = True
        self.wake.set()
        if first and self.interruptible:
            self.interruptible = False
            raise Stopping

    def _on_hup(self, signum: int, frame: object) -> None:
        self.reload = True
        self.wake.set()


class _Watchdog(threading.Thread):
    """Pings WATCHDOG=1 every half ``WATCHDOG_USEC`` while the main loop's heartbeat is recent."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="edgetune-watchdog", daemon=True)
        self.interval = interval
        self.heartbeat = time.monotonic()
        self.done = threading.Event()

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            if time.monotonic() - self.heartbeat < max(STALL_LIMIT_S, 4 * self.interval):
                sd.notify("WATCHDOG=1")


class Daemon:
    """One run of the daemon; :meth:`run` returns the exit status."""

    def __init__(self, settings: Settings, *, load_config: Callable[[], tuple[DaemonSettings, FleetSettings | None]],
                 measure_bandwidth: bool = True) -> None:
        self.settings = settings
        self.load_config = load_config
        self.config, self.fleet = load_config()
        self.measure_bandwidth = measure_bandwidth
        self.signals = _Signals()
        interval = sd.watchdog_interval()
        self.watchdog = _Watchdog(interval) if interval else None
        self.runner: RequestRunner | None = None
        # A round of work (first boot, after an update) runs requests back to back until this deadline;
        # what is left then is tuned one request per poll interval.
        self.burst_deadline: float | None = None
        self.last_trickle = float("-inf")
        self.trickle_logged = False
        self.next_upload = time.monotonic() + min(30.0, self.config.upload_interval_s)  # not during start-up
        self.tuned_since_start = 0
        self.worked = True  # something to tidy up (the model's memory, the outbox) at the next idle
        self.idle_detail = ""
        self.last_state: dict[str, Any] | None = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        self.signals.install()
        politeness = lower_priority()
        log(f"starting (pid {os.getpid()}; {', '.join(politeness) or 'priority already low'}); "
            f"store {self.settings.db_path}")
        if self.watchdog:
            self.watchdog.start()
        try:
            sd.notify(f"EXTEND_TIMEOUT_USEC={EXTEND_USEC}", "STATUS=probing the hardware")
            profile = self._probe()
            if self.signals.stop:
                return self._stopped(None)
            with Store.open(self.settings.db_path) as store:
                store.upsert_device(profile.fingerprint(), profile.to_dict())
                requeued = store.recover_interrupted()
                if requeued:
                    log(f"{requeued} request(s) interrupted last time are queued again")
                self.runner = RequestRunner(self.settings, profile, evaluations=self.config.evaluations,
                                            cloud=self._cloud())
                self._state(store, "checking", f"hardware {profile.fingerprint()}")
                sd.notify("READY=1", f"STATUS=probed {profile.fingerprint()}; checking stored results")
                self._check(store)
                self._loop(store)
                return self._stopped(store)
        except Stopping:
            return self._stopped(None)
        finally:
            if self.watchdog:
                self.watchdog.done.set()

    def _probe(self) -> Any:
        from agent.hardware import probe

        self.signals.interruptible = True
        try:
            return probe(measure_bandwidth=self.measure_bandwidth, compiler=self.settings.compiler,
                         cache_dir=self.settings.cache_dir)
        finally:
            self.signals.interruptible = False

    def _loop(self, store: Store) -> None:
        while not self.signals.stop:
            self._beat()
            if self.signals.reload:
                self._reload(store)
                continue
            waiting = bool(store.queue(states=("queued",), limit=1))
            now = time.monotonic()
            if not waiting:
                self.burst_deadline = None
            elif self.burst_deadline is None:  # work appeared: a new round, within the round budget
                self.burst_deadline = now + self.config.first_boot_budget_s
                self.trickle_logged = False
            in_burst = waiting and self.burst_deadline is not None and now < self.burst_deadline
            if waiting and (in_burst or now - self.last_trickle >= self.config.poll_interval_s):
                if not self._busy(store):
                    self._work_one(store, in_burst)
                continue
            if waiting and not self.trickle_logged:
                self.trickle_logged = True
                log(f"round budget of {self.config.first_boot_budget_s:g} s spent; the rest of the queue is "
                    "tuned one request per poll interval")
            self._idle(store, trickle=waiting)

    def _work_one(self, store: Store, in_burst: bool) -> None:
        assert self.runner is not None
        request = store.next_request()
        if request is None:
            return
        queued = len(store.queue(states=("queued",), limit=10_000))
        label = f"{request['kernel']} {request['shape']} ({request['target']})"
        self._state(store, "tuning", label)
        sd.notify(f"STATUS=tuning {label}; {queued} more queued")
        seconds = max(1.0, self.burst_deadline - time.monotonic()) if in_burst and self.burst_deadline else None
        self.signals.interruptible = True
        try:
            outcome = self.runner.run(store, request, seconds=seconds, on_result=lambda *_: self._beat())
        except Stopping:
            self.signals.interruptible = False
            store.finish_request(request["id"], state="queued")
            log(f"stopped while tuning {label}; it is queued again, every finished run is kept")
            raise
        finally:
            self.signals.interruptible = False
        self.last_trickle = time.monotonic()
        self.worked = True
        if outcome.state == "done" and outcome.result is not None:
            self.tuned_since_start += 1
            result = outcome.result
            speedup = f"{result.speedup:.2f}x over the default" if result.speedup else "no speed-up measured"
            log(f"tuned {label} in {outcome.seconds:.1f} s: {speedup} ({result.evaluations} evaluations)")
        else:
            log(f"could not tune {label}: {outcome.error}")
        if self.signals.stop:
            raise Stopping

    def _busy(self, store: Store) -> bool:
        """Whether other processes keep the CPUs busy; if so, wait a poll interval (or a signal)."""
        used = others_cpu_percent(self.config.busy_sample_s)
        if used <= self.config.busy_cpu_percent:
            return False
        detail = f"the system is busy ({used:.0f}% CPU > {self.config.busy_cpu_percent:g}%)"
        self._state(store, "paused", detail)
        sd.notify(f"STATUS=paused: {detail}")
        log(f"paused: {detail}")
        self._sleep(min(self.config.poll_interval_s, 30.0))
        return True

    def _idle(self, store: Store, *, trickle: bool) -> None:
        if self.worked:  # tidy up once after work; an idle poll after that is one query
            self.worked = False
            if self.runner is not None:
                self.runner.release()
            gc.collect()
            if not self.fleet:
                dropped = store.prune_outbox(self.config.outbox_max_records)
                if dropped:
                    log(f"no fleet configured: dropped the {dropped} oldest telemetry record(s) beyond "
                        f"{self.config.outbox_max_records} (the runs themselves are kept)")
            tuned = len(store.best_dependencies(self.runner.profile.fingerprint())) if self.runner else 0
            self.idle_detail = f"{tuned} result(s) on this hardware; {self.tuned_since_start} tuned since start"
        self._upload(store)
        detail = self.idle_detail
        wait = self.config.poll_interval_s
        if trickle:
            wait = max(0.0, self.last_trickle + self.config.poll_interval_s - time.monotonic())
            detail += "; more queued, one per poll interval"
        if self._state(store, "idle", detail):
            sd.notify(f"STATUS=idle: {detail}")
        if self.fleet:
            wait = min(wait, max(1.0, self.next_upload - time.monotonic()))
        self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        """Sleep without using the CPU, waking for signals and often enough to keep the heartbeat."""
        deadline = time.monotonic() + seconds
        while not self.signals.stop and not self.signals.reload:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.signals.wake.wait(min(left, STALL_LIMIT_S / 2)):
                self.signals.wake.clear()
                return
            self._beat()

    # -- pieces ------------------------------------------------------------------------------

    def _check(self, store: Store) -> None:
        """Compare stored results with what the device has now; queue what is stale or missing."""
        from agent.kernels.workloads import find_workload

        assert self.runner is not None
        device = self.runner.profile.fingerprint()
        preset = None
        if self.config.preset:
            try:
                preset = find_workload(self.config.preset)
            except EdgetuneError as exc:
                log(f"preset: {exc}; tuning only what is queued")
        previous = store.info("device")
        report = refresh(store, Current.now(device, self.settings), preset, requested_by="daemon")
        if previous and previous.get("fingerprint") != device:
            log(f"hardware changed since the last start ({previous.get('fingerprint')} -> {device})")
        for finding in report.findings:
            log(f"{finding.kind}: {finding.kernel} {finding.shape} ({finding.target}): {finding.reason}")
        for problem in report.problems:
            log(f"skipped: {problem}")
        if report.queued:
            log(f"queued {report.queued} tuning request(s); {report.fresh} stored result(s) are up to date")

    def _reload(self, store: Store) -> None:
        self.signals.reload = False
        try:
            config, fleet = self.load_config()
        except EdgetuneError as exc:
            log(f"reload failed, keeping the running config: {exc}")
            return
        self.config, self.fleet = config, fleet
        if self.runner is not None:
            self.runner = RequestRunner(self.settings, self.runner.profile, evaluations=config.evaluations,
                                        cloud=self._cloud())
        log(f"config reloaded: preset {config.preset or 'none'}, fleet {'configured' if fleet else 'none'}")
        self._check(store)

    def _cloud(self) -> Any:
        """Ask a ranking service when unsure: EDGETUNE_CLOUD_URL, else the fleet's /v1/rank."""
        from agent.predict.cloud import CloudSettings, cloud_settings_from

        configured = cloud_settings_from(self.settings)
        if configured is not None:
            return configured
        if self.fleet:
            return CloudSettings(url=self.fleet.url, kind="fleet", token=self.fleet.token)
        return None

    def _upload(self, store: Store) -> None:
        if not self.fleet or time.monotonic() < self.next_upload:
            return
        from agent.telemetry.upload import RetryPolicy, upload

        self.next_upload = time.monotonic() + self.config.upload_interval_s
        waiting = store.count("outbox")
        if not waiting:
            return
        self._state(store, "uploading", f"{waiting} record(s)")
        self.signals.interruptible = True
        try:
            result = upload(store, self.fleet, retry=RetryPolicy(attempts=3, cap_s=5.0, timeout_s=20.0))
            record = {"at": utc_now(), "ok": True, **result.to_dict()}
            log(f"uploaded {result.sent} record(s): {result.accepted} accepted, {result.duplicates} already there, "
                f"{result.dead_lettered} refused; {result.remaining} left")
        except EdgetuneError as exc:
            record = {"at": utc_now(), "ok": False, "error": str(exc)}
            log(f"upload failed, will retry in {self.config.upload_interval_s:g} s: {exc}")
        finally:
            self.signals.interruptible = False
        store.set_info("last_upload", record)

    def _state(self, store: Store | None, state: str, detail: str = "") -> bool:
        """Record the daemon's state for ``edgetune status``; True (and a write) only when it changed."""
        record = {"state": state, "detail": detail, "pid": os.getpid(), "preset": self.config.preset}
        if store is None or self.last_state == record:
            return False
        self.last_state = record
        store.set_info("daemon", {**record, "since": utc_now()})
        return True

    def _beat(self) -> None:
        if self.watchdog:
            self.watchdog.beat()

    def _stopped(self, store: Store | None) -> int:
        sd.notify("STOPPING=1", "STATUS=stopping")
        if store is not None:
            self._state(store, "stopped")
        else:
            try:
                with Store.open(self.settings.db_path, lock_timeout_s=2.0) as opened:
                    self._state(opened, "stopped")
            except EdgetuneError:
                pass
        log("stopped")
        return 0


def run_daemon(settings: Settings, *, measure_bandwidth: bool = True) -> int:
    """Run until SIGTERM; the config file is read now and on every SIGHUP."""

    def load_config() -> tuple[DaemonSettings, FleetSettings | None]:
        return DaemonSettings.load(), FleetSettings.from_environ()

    return Daemon(settings, load_config=load_config, measure_bandwidth=measure_bandwidth).run()

