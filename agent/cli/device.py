"""Device commands: the daemon, the updaters' hook, status, the queue, and the upload to the fleet."""

from __future__ import annotations

import json
import sys

import click

from agent.cli.options import json_option
from agent.cli.output import emit, print_hook_result, print_status
from agent.cli.root import Context
from agent.daemon.privileges import drop_to_store_owner

__all__ = ["daemon", "hook", "queue", "status", "upload"]


@click.command()
@click.option("--batch", "batch_size", default=500, show_default=True, type=click.IntRange(1, 1000),
              help="Records per request.")
@json_option
@click.pass_obj
def upload(obj: Context, batch_size: int, as_json: bool) -> None:
    """Send the store's telemetry outbox (runs, finished tunings) to the fleet service.

    The fleet comes from EDGETUNE_FLEET_URL and EDGETUNE_FLEET_TOKEN, else the [fleet] table
    (url, token) of EDGETUNE_CONFIG (default /etc/edgetune/config.toml). Safe to interrupt and
    run again: nothing is lost or sent twice.
    """
    from agent.settings import DEFAULT_CONFIG, FleetSettings
    from agent.telemetry.upload import upload as upload_outbox

    fleet = FleetSettings.from_environ()
    if fleet is None:
        click.echo("no fleet configured (set EDGETUNE_FLEET_URL and EDGETUNE_FLEET_TOKEN, or [fleet] url and "
                   f"token in {DEFAULT_CONFIG} or the file EDGETUNE_CONFIG names)")
        return
    with obj.open_store() as store:
        result = upload_outbox(store, fleet, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"sent {result.sent} records in {result.batches} batches: {result.accepted} accepted, "
               f"{result.duplicates} already there, {result.dead_lettered} refused (kept in dead_letter); "
               f"{result.remaining} left")


@click.command()
@click.option("--no-bandwidth", is_flag=True, help="Skip the memory-bandwidth measurement at start-up.")
@click.pass_obj
def daemon(obj: Context, no_bandwidth: bool) -> None:
    """Run the on-device agent until SIGTERM (systemd's edgetune.service runs this).

    Probes the hardware, checks stored results against what they depend on (compiler, kernel
    sources, model, hardware), tunes what is stale or missing from the [daemon] preset, most
    important first, then works the queue and uploads telemetry to the fleet when one is
    configured. Runs niced with idle I/O and pauses while other processes keep the CPUs busy.
    Speaks systemd's notify protocol (READY, STATUS, WATCHDOG, STOPPING). SIGHUP reloads
    the config file (EDGETUNE_CONFIG, default /etc/edgetune/config.toml); SIGUSR1 looks at the
    queue at once.
    """
    from agent.daemon.config import DaemonSettings
    from agent.daemon.service import run_daemon
    from agent.settings import FleetSettings

    drop_to_store_owner(obj.settings.db_path)
    DaemonSettings.load()  # a bad config file is a one-line error before anything starts
    FleetSettings.from_environ()
    sys.exit(run_daemon(obj.settings, measure_bandwidth=not no_bandwidth))


@click.group()
def hook() -> None:
    """Hooks for firmware updaters (packaging/hooks has ready-made Mender, RAUC and SWUpdate scripts)."""


@hook.command("post-update")
@click.option("--wait", is_flag=True, help="Tune what is stale now instead of leaving it to the daemon.")
@click.option("--budget", "budget", metavar="DURATION", help="With --wait: stop after this long (90s, 10m).")
@click.option("--lock-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for the store's lock before exiting 75.")
@json_option
@click.pass_obj
def hook_post_update(obj: Context, wait: bool, budget: str | None, lock_timeout: float, as_json: bool) -> None:
    """Check stored results against what they depend on after an update; queue the stale ones.

    Compares each stored best configuration's compiler version, kernel source hash, model
    version and hardware fingerprint with this device now, marks mismatches stale, and
    queues their re-tuning (and the preset's layers that have no result) for the daemon.
    Safe to run again at any time.

    \b
    Exit codes:
      0   checked; nothing stale, or re-tuning queued (with --wait: done)
      1   error (one line on stderr)
      2   usage error
      3   --wait: the budget ran out; the rest stays queued for the daemon
      75  the store is busy (locked by another process): try again later
    """
    from agent.daemon.config import DaemonSettings, parse_duration
    from agent.daemon.hook import post_update

    if budget is not None and not wait:
        raise click.UsageError("--budget needs --wait (without it the daemon does the work)")
    budget_s = parse_duration(budget, "--budget") if budget is not None else None
    drop_to_store_owner(obj.settings.db_path)
    result = post_update(obj.settings, DaemonSettings.load(), wait=wait, budget_s=budget_s,
                         lock_timeout_s=lock_timeout)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print_hook_result(result)
    if result.exit_code:
        sys.exit(result.exit_code)


@click.command()
@json_option
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Show what this device has tuned, what is queued, the daemon's state and the last upload (read-only)."""
    from agent.daemon.config import DaemonSettings
    from agent.daemon.status import read_status
    from agent.settings import FleetSettings

    drop_to_store_owner(obj.settings.db_path)
    data = read_status(obj.settings, config=DaemonSettings.load(), fleet=FleetSettings.from_environ())
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    print_status(data)


@click.group()
def queue() -> None:
    """The daemon's tuning requests, worked oldest first."""


@queue.command("add")
@click.argument("kernel")
@click.option("--shape", help="Problem size (M=..,N=..) or a named shape; default: the kernel's default.")
@click.option("--target", default="native", show_default=True, help="Compiler -march target.")
@click.pass_obj
def queue_add(obj: Context, kernel: str, shape: str | None, target: str) -> None:
    """Ask the daemon to tune KERNEL (a name or a path to kernel.toml) at a shape."""
    from agent.kernels.problem import parse_shape
    from agent.kernels.registry import find_kernel

    problem = parse_shape(find_kernel(kernel), shape)
    with obj.open_store() as store:
        added = store.queue_request(kernel=problem.spec.name, kernel_path=str(problem.spec.directory),
                                    shape=problem.key, target=target, reason="asked from the command line",
                                    requested_by="cli")
    click.echo(f"queued {problem.spec.name} {problem.key} ({target})" if added
               else f"{problem.spec.name} {problem.key} ({target}) is already queued")


@queue.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also finished and failed requests.")
@json_option
@click.pass_obj
def queue_list(obj: Context, show_all: bool, as_json: bool) -> None:
    """List queued and running requests (with --all, finished ones too)."""
    from agent.store import QUEUE_STATES

    with obj.open_store() as store:
        rows = store.queue(states=QUEUE_STATES if show_all else ("queued", "running"), limit=1000)
    emit(rows, as_json, title="Queue", columns=["id", "kernel", "shape", "target", "state", "requested_by",
                                                  "reason", "error"])
