"""Benchmark: the daemon's first boot on the default preset, and what it costs the device while idle.

Starts the real ``edgetune daemon`` (as systemd would, with a ``NOTIFY_SOCKET`` datagram socket
this script reads) on a fresh store and a fresh compile cache, with the preset of the config
(default: mobilenet-v2, the packaged default), and reports:

- start to READY=1 (the probe, with the bandwidth measurement as the service does it);
- first-boot time: start to the first STATUS=idle, every preset layer tuned;
- peak RSS of the daemon process and of its whole tree (benchmark worker, compilers) during it;
- idle: CPU seconds the daemon used over ``--idle`` seconds once idle (as % of one core), its RSS.

Baseline, run side by side: the same layers tuned one by one with ``edgetune tune`` (what a user
would script without the daemon), each a fresh process on the same fresh-cache footing.

    .venv/bin/python benchmarks/daemon_firstboot.py [--preset mobilenet-v2] [--idle 60] [--runs 1] [--markdown]

Not a test: nothing asserts. Figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from strategies import table  # noqa: E402  (a sibling script)

from agent.kernels.workloads import find_workload  # noqa: E402
from harness.daemon_process import DaemonProcess, write_config  # noqa: E402  (the shared stand-in for systemd)

MIB = 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilenet-v2")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle to measure")
    parser.add_argument("--runs", type=int, default=1, help="first boots (and baselines) to run")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    workload = find_workload(args.preset)
    boots, baselines = [], []
    for index in range(args.runs):
        boots.append(first_boot(args.preset, args.idle))
        print(f"  boot {index + 1}: {boots[-1]}", file=sys.stderr, flush=True)
        if not args.no_baseline:
            baselines.append(one_by_one(workload))
            print(f"  baseline {index + 1}: {baselines[-1]:.1f} s", file=sys.stderr, flush=True)

    def median(key: str) -> float:
        return statistics.median(b[key] for b in boots)

    layers = len({(layer.kernel, layer.shape) for layer in workload.layers})
    rows = [
        ["preset", f"{args.preset} ({layers} layers)"],
        ["start to READY=1 s", f"{median('ready_s'):.2f}"],
        ["first boot: start to all layers tuned s", f"{median('first_boot_s'):.1f}"],
        ["baseline: `edgetune tune` per layer, total s", f"{statistics.median(baselines):.1f}" if baselines else "-"],
        ["ratio daemon / baseline", f"{median('first_boot_s') / statistics.median(baselines):.2f}" if baselines
         else "-"],
        ["peak RSS during first boot, daemon MiB", f"{median('peak_rss') / MIB:.0f}"],
        ["peak RSS during first boot, process tree MiB", f"{median('peak_tree') / MIB:.0f}"],
        [f"idle CPU over {args.idle:g} s, % of one core", f"{median('idle_cpu_pct'):.3f}"],
        ["idle wake-ups (voluntary context switches) per minute", f"{median('idle_wakeups_per_min'):.0f}"],
        ["idle RSS, daemon MiB", f"{median('idle_rss') / MIB:.0f}"],
    ]
    print(table(["measure", "value"], rows, markdown=args.markdown))
    return 0


def first_boot(preset: str, idle_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="edgetune-boot-") as tmp:
        base = Path(tmp)
        config = write_config(base / "config.toml", preset=preset, busy_cpu_percent=100, poll_interval="60s")
        env = {"EDGETUNE_DB": str(base / "state" / "edgetune.db"), "EDGETUNE_CACHE": str(base / "cache"),
               "EDGETUNE_CONFIG": str(config), "EDGETUNE_FLEET_URL": "", "EDGETUNE_FLEET_TOKEN": ""}
        started = time.monotonic()
        daemon = DaemonProcess(base, env, bandwidth=True)
        peaks = {"rss": 0, "tree": 0}
        stop = threading.Event()
        sampler = threading.Thread(target=_sample, args=(daemon.process.pid, peaks, stop), daemon=True)
        sampler.start()
        try:
            ready = daemon.wait_for(lambda m: m == "READY=1", 300)
            ready_at = daemon.messages[ready][0]
            idle = daemon.wait_for(lambda m: m.startswith("STATUS=idle"), 3600, after=ready)
            idle_at = daemon.messages[idle][0]
            stop.set()
            sampler.join()
            time.sleep(2.0)  # let the idle step finish (model released, garbage collected)
            process = psutil.Process(daemon.process.pid)
            cpu_before, switches_before = sum(process.cpu_times()[:2]), process.num_ctx_switches().voluntary
            time.sleep(idle_s)
            cpu_after, switches_after = sum(process.cpu_times()[:2]), process.num_ctx_switches().voluntary
            idle_rss = process.memory_info().rss
            code, _ = daemon.stop()
            if code != 0:
                raise SystemExit(f"the daemon exited {code}:\n{daemon.log()[-3000:]}")
        finally:
            daemon.close()
        return {"ready_s": ready_at - started, "first_boot_s": idle_at - started, "peak_rss": peaks["rss"],
                "peak_tree": peaks["tree"], "idle_cpu_pct": 100 * (cpu_after - cpu_before) / idle_s,
                "idle_wakeups_per_min": (switches_after - switches_before) * 60 / idle_s, "idle_rss": idle_rss}


def one_by_one(workload) -> float:
    """The same layers tuned by one ``edgetune tune`` process each, on a fresh store and cache."""
    with tempfile.TemporaryDirectory(prefix="edgetune-base-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGETUNE_DB": str(Path(tmp) / "edgetune.db"),
               "EDGETUNE_CACHE": str(Path(tmp) / "cache"), "EDGETUNE_CONFIG": str(Path(tmp) / "none.toml")}
        started = time.monotonic()
        for layer in {(layer.kernel, layer.shape): layer for layer in workload.layers}.values():
            done = subprocess.run([sys.executable, "-m", "agent.cli", "tune", layer.kernel, "--shape", layer.shape,
                                   "--json"], env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"edgetune tune {layer.kernel} {layer.shape}: {done.stderr.strip()}")
        return time.monotonic() - started


def _sample(pid: int, peaks: dict[str, int], stop: threading.Event) -> None:
    """Every 50 ms: the daemon's RSS, and the RSS summed over it and its descendants."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            rss = root.memory_info().rss
            tree = rss + sum(_rss(child) for child in root.children(recursive=True))
        except psutil.NoSuchProcess:
            return
        peaks["rss"], peaks["tree"] = max(peaks["rss"], rss), max(peaks["tree"], tree)
        time.sleep(0.05)


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


if __name__ == "__main__":
    sys.exit(main())
