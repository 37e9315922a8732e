"""What the ``edgetune`` commands print: tables, JSON, progress bars and one-line summaries.

Tables and JSON go to stdout; progress goes to stderr, only on a terminal, never with ``--json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.errors import EdgetuneError

__all__ = ["emit", "human", "print_case", "print_hook_result", "print_pull", "print_status", "print_tune_result",
           "progress", "seconds", "size", "write_text"]


def emit(rows: list[dict[str, Any]], as_json: bool, *, title: str,
          columns: Sequence[str] | None = None) -> None:
    """Print ``rows`` as a table (``columns``, default all) or, with ``as_json``, as a JSON list."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo(f"{title}: none stored yet.")
        return
    columns = list(columns or rows[0].keys())
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(human(c, row.get(c)) for c in columns))
    Console().print(table)


def human(key: str, value: Any) -> str:
    """One table cell: seconds and bytes in readable units (by the key's suffix), None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float) and key.endswith("_s"):
        return seconds(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int) and key.endswith("_bytes"):
        return size(value)
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def seconds(value: float) -> str:
    """A duration in s, ms, us or ns, three significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def size(value: int) -> str:
    """A byte count in GiB, MiB, KiB or B."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


class progress:
    """A progress bar on stderr (terminal only, not with --json); yields the callback."""

    def __init__(self, quiet: bool, problem: Any, budget: Any, strategy: str) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.total = budget.evaluations
        self.description = f"{strategy} {problem.spec.name} {problem.key}"
        self.bar: Progress | None = None

    def __enter__(self):
        if not self.enabled:
            return None
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=self.total, best="-")
        self.fastest: float | None = None

        def on_result(result: Any, evaluations: int) -> None:
            if result.median_s is not None and (self.fastest is None or result.median_s < self.fastest):
                self.fastest = result.median_s
            assert self.bar is not None
            self.bar.update(self.task, completed=evaluations,
                            best=seconds(self.fastest) if self.fastest else "-")

        return on_result

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_tune_result(result: Any) -> None:
    """The human summary of one tuning: winner, default, speed-up, confidence, time split."""
    console = Console()
    winner = result.winner
    outcomes = ", ".join(f"{n} {s}" for s, n in sorted(result.outcomes.items()))
    console.print(f"[bold]{result.kernel}[/] {result.shape} on {result.target}: "
                  f"{result.evaluations} evaluations ({outcomes}) in {result.wall_s:.1f} s "
                  f"[dim](tuning #{result.tuning_id}, strategy {result.strategy}, budget {result.budget})[/]")
    if winner is None:
        return  # the command ends with the one-line error that says so
    rate = f", {result.gflops:.1f} GFLOP/s" if result.gflops else ""
    console.print(f"winner: [bold green]{winner.key}[/]  median {seconds(winner.median_s)}{rate}")
    if result.default is not None and result.speedup is not None:
        console.print(f"default {result.default.key}: median {seconds(result.default.median_s)}  "
                      f"-> speed-up [bold]{result.speedup:.2f}x[/]")
    if result.tie:
        console.print("[yellow]the runner-up is within 2% of the winner: treat them as tied[/]")
    if result.winner_source is not None:
        rank = f" (predicted #{result.winner_predicted_rank + 1})" if result.winner_predicted_rank is not None else ""
        console.print(f"winner from: {result.winner_source}{rank}")
    if result.strategy == "model":
        confidence = "unknown (no calibration)" if result.confidence is None else f"{result.confidence:.2f}"
        console.print(f"confidence: {confidence}; cloud: {result.cloud or 'not asked'}")
        if result.situation is not None:
            console.print(f"ranked by: {result.ranked_by} first ({result.situation}; see models/README.md, Policy)")
    if result.timings:
        split = ", ".join(f"{name.removesuffix('_s')} {spent:.2f} s" for name, spent in result.timings.items()
                          if spent)
        if split:
            console.print(f"[dim]time: {split}[/]")


def print_case(index: int, total: int, result: Any) -> None:
    """One line per collected case: its state, valid configurations, best time and speed-up."""
    speed = f", best/default {result.speedup:.2f}x" if result.speedup else ""
    best_text = seconds(result.best_s) if result.best_s else "no valid configuration"
    click.echo(f"[{index}/{total}] {result.case.label}: {result.state}, {result.valid}/{result.planned} valid "
               f"(space {result.space_size}), best {best_text}{speed}, {result.wall_s:.1f} s")


def print_pull(url: str, out_dir: Path, manifest: Mapping[str, Any], *, as_json: bool, err: bool = False) -> None:
    """What a pull from the fleet wrote: JSON counts, or one line (on stderr with ``err``)."""
    counts = manifest["counts"]
    if as_json:
        click.echo(json.dumps({"path": str(out_dir), "counts": counts}, indent=1))
        return
    click.echo(f"{out_dir}: {counts['records']} records, {counts['cases']} cases, "
               f"{len(manifest['devices'])} devices from {url}", err=err)


def print_hook_result(result: Any) -> None:
    """What ``hook post-update`` found and did, one line per finding, then the totals."""
    report = result.report
    for finding in report["stale"]:
        click.echo(f"stale: {finding['kernel']} {finding['shape']} ({finding['target']}): {finding['reason']}")
    for finding in report["missing"]:
        click.echo(f"missing: {finding['kernel']} {finding['shape']}: {finding['reason']}")
    for problem in report["problems"]:
        click.echo(f"skipped: {problem}")
    for entry in result.tuned:
        speedup = f"{entry['speedup']:.2f}x" if entry["speedup"] else "no speed-up"
        click.echo(f"tuned: {entry['kernel']} {entry['shape']} ({entry['target']}): {speedup}")
    for entry in result.failed:
        click.echo(f"failed: {entry['kernel']} {entry['shape']} ({entry['target']}): {entry['error']}")
    click.echo(f"{report['fresh']} result(s) up to date, {len(report['stale'])} stale, "
               f"{len(report['missing'])} missing; {report['queued']} newly queued, "
               f"{result.left} waiting "
               f"({result.seconds:.1f} s)")


def print_status(data: dict[str, Any]) -> None:
    """``edgetune status`` for people: one aligned line per fact, then the preset's layers and the queue."""
    daemon, device, upload = data["daemon"], data["device"], data["last_upload"]
    lines = [("store", data["store"] + ("" if data["store_exists"] else " (none yet: the daemon has not run)"))]
    if device:
        lines.append(("hardware", f"{device['fingerprint']} (checked {device['checked_at']})"))
    if daemon:
        running = "running" if daemon.get("running") else "not running"
        detail = f": {daemon['detail']}" if daemon.get("detail") else ""
        lines.append(("daemon", f"{running}, {daemon['state']}{detail} (since {daemon['since']}, pid {daemon['pid']})"))
    else:
        lines.append(("daemon", "has not run"))
    layers = data["layers"]
    if data["preset"]:
        tuned = sum(1 for layer in layers if layer["state"] == "tuned")
        lines.append(("preset", f"{data['preset']}: {tuned} of {len(layers)} layers tuned"))
    results = data["results"]
    lines.append(("results", f"{results['tuned']} up to date, {results['stale']} stale"))
    queued = [q for q in data["queue"] if q["state"] == "queued"]
    running = [q for q in data["queue"] if q["state"] == "running"]
    lines.append(("queue", f"{len(queued)} queued, {len(running)} running"))
    model = data["model"]
    lines.append(("model", f"{model['version'] or 'none'} ({model['dir']})"))
    if upload:
        outcome = (f"{upload.get('sent', 0)} sent, {upload.get('accepted', 0)} accepted" if upload.get("ok")
                   else f"failed: {upload.get('error')}")
        lines.append(("last upload", f"{upload['at']}: {outcome}"))
    else:
        lines.append(("last upload", "never" + ("" if data["fleet"] else " (no fleet configured)")))
    lines.append(("outbox", f"{data['outbox']} record(s) waiting, {data['dead_letter']} refused"))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        click.echo(f"{name:<{width}}  {value}")
    if layers:
        emit([{"layer": layer["label"], "kernel": layer["kernel"], "shape": layer["shape"], "state": layer["state"],
                "speedup": layer["speedup"]} for layer in layers], False, title=f"Preset {data['preset']}")
    if data["queue"]:
        emit(data["queue"], False, title="Queue", columns=["id", "kernel", "shape", "target", "state", "reason"])


def write_text(output: Path | None, text: str) -> None:
    """Write ``text`` to ``output`` atomically (via a .partial file), or to stdout when None."""
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        partial = output.with_name(output.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        raise EdgetuneError(f"cannot write {output}: {exc.strerror or exc}") from None
