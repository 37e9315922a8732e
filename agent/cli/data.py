"""Data commands: collect a dataset by measuring, import and export measurements."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from agent.cli.options import json_option
from agent.cli.output import emit, print_case, write_text
from agent.cli.root import Context
from agent.errors import ConfigError, EdgetuneError

__all__ = ["collect", "export", "import_"]


@click.command()
@click.option("--kernel", "kernel_names", multiple=True, metavar="NAME",
              help="Kernel to sweep (repeatable). Default: every built-in kernel.")
@click.option("--preset", metavar="NAME|PATH", help="Sweep a workload preset's layers (profiles/workloads).")
@click.option("--shapes", metavar="NAME[;NAME...]",
              help="Named shapes (or M=..,N=.. texts) separated by ';'. Default: every named shape but 'small'.")
@click.option("--target", "targets", multiple=True, metavar="MARCH",
              help="Compiler target (repeatable). Default: every -march level this CPU runs, and native.")
@click.option("--cores", default="1,2", show_default=True, metavar="N[,N...]",
              help="Core counts to emulate (the worker is pinned to that many CPUs).")
@click.option("--configs", "configs_per_case", default=200, show_default=True,
              help="Configurations per case: the whole space when it is no larger, else a seeded sample.")
@click.option("--seed", default=0, show_default=True, help="Seed of the sample and the inputs.")
@click.option("--remeasure", is_flag=True, help="Measure finished cases again (default: skip them).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False),
              help="Afterwards, write the collected data as a dataset folder here.")
@click.option("--name", "dataset_name", help="Dataset name for --export (default: the folder name).")
@click.option("--dry-run", is_flag=True, help="List the cases and their space sizes; measure nothing.")
@json_option
@click.pass_obj
def collect(obj: Context, kernel_names: tuple[str, ...], preset: str | None, shapes: str | None,
            targets: tuple[str, ...], cores: str, configs_per_case: int, seed: int, remeasure: bool,
            export_dir: str | None, dataset_name: str | None, dry_run: bool, as_json: bool) -> None:
    """Sweep kernels x shapes x compiler targets x core counts into the store (a dataset).

    Resumable: every measurement is stored as it is made, so running the same command
    again after an interruption measures only what is missing.
    """
    from agent.collect import CollectOptions, plan_sweep
    from agent.collect import collect as collect_sweep
    from agent.collect import dry_run as plan_rows

    try:
        core_counts = [int(c) for c in cores.split(",") if c.strip()]
    except ValueError:
        raise ConfigError(f"--cores {cores!r} is not a comma-separated list of integers") from None
    sweep = plan_sweep(kernel_names=kernel_names, preset=preset, shapes=shapes, targets=targets, cores=core_counts,
                       configs_per_case=configs_per_case, compiler=obj.settings.compiler)
    if dry_run:
        rows = plan_rows(sweep, configs_per_case=configs_per_case, seed=seed)
        emit(rows, as_json, title=f"{len(rows)} cases")
        return
    options = CollectOptions(configs_per_case=configs_per_case, seed=seed, remeasure=remeasure)
    with obj.open_store() as store:
        report = collect_sweep(store, sweep=sweep, cache_dir=obj.settings.cache_dir, options=options,
                               export_dir=export_dir, dataset_name=dataset_name, commands=[_command_line()],
                               on_case=None if as_json else print_case)
    summary, failures = report.summary(), report.failures
    if as_json:
        click.echo(json.dumps({**summary, "results": [r.to_dict() for r in report.results]}, indent=2))
    else:
        click.echo(f"{summary['cases']} cases ({summary['skipped']} already complete), "
                   f"{summary['measured_now']} configurations measured now, in {report.wall_s:.0f} s"
                   + (f"; dataset {export_dir}: {summary['records']} records" if report.manifest else ""))
    if failures:
        raise EdgetuneError(f"{len(failures)} case(s) have no valid configuration (every candidate failed "
                            f"or disagreed with the reference), first: {failures[0].case.label}; "
                            "see `edgetune runs --status correctness`")


def _command_line() -> str:
    """This command as typed, for a dataset's manifest."""
    import shlex

    return shlex.join(["edgetune", *sys.argv[1:]])


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "kernel-tuner", "t4", "dataset"]), default="auto",
              show_default=True, help="File format; auto detects it from the content.")
@click.option("--device", help="Device name, for files that do not say (T4) or to override it.")
@click.option("--kernel", help="Kernel name, for files that do not say (T4) or to override it.")
@click.option("--shape", metavar="NAME=VALUE,...", help="Problem shape, for T4 files (they do not say).")
@click.option("--replace", "replace_existing", is_flag=True, help="Import files that were imported before again.")
@json_option
@click.pass_obj
def import_(obj: Context, paths: tuple[Path, ...], fmt: str, device: str | None, kernel: str | None,
            shape: str | None, replace_existing: bool, as_json: bool) -> None:
    """Import Kernel Tuner caches, T4 results or dataset folders into the store.

    A directory that is not a dataset stands for every .json/.json.gz file under it. A
    file that cannot be read is reported on one line and changes nothing; the rest go on.
    """
    from agent.interchange import import_paths

    parsed_shape = None
    if shape:
        try:
            parsed_shape = {k.strip(): int(v) for k, v in (p.split("=", 1) for p in shape.split(","))}
        except ValueError:
            raise ConfigError(f"--shape {shape!r}: expected NAME=VALUE pairs with integer values") from None
    with obj.open_store() as store:
        outcomes, errors = import_paths(store, paths, fmt=fmt, device=device, kernel=kernel, shape=parsed_shape,
                                        replace_existing=replace_existing,
                                        on_error=lambda exc: click.echo(f"edgetune: error: {exc}", err=True))
    rows = [{"path": str(o.path), "kernel": o.kernel, "device": o.device, "state": o.state, "runs": o.runs}
            for o in outcomes]
    emit(rows, as_json, title="Imported")
    if errors:
        raise EdgetuneError(f"{len(errors)} of {len(errors) + len(rows)} file(s) not imported (see above)")


@click.command()
@click.option("--format", "fmt", type=click.Choice(["t4", "kernel-tuner", "dataset", "jsonl"]), required=True,
              help="t4 / kernel-tuner: one tuning case as a file; dataset: a folder for training; "
                   "jsonl: every selected run, one JSON object per line.")
@click.option("--tuning", "tuning_id", type=int, help="The tuning session to export (t4, kernel-tuner).")
@click.option("--kernel", "kernel_names", multiple=True, help="Only this kernel (repeatable).")
@click.option("--origin", help="Only data whose origin starts with this (measured, kernel-tuner, t4, dataset).")
@click.option("--strategy", help="Only tuning sessions of this strategy (collect, import, local ...).")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="File (t4, kernel-tuner, jsonl; default stdout) or folder (dataset, required).")
@click.option("--name", "dataset_name", help="Dataset name (default: the folder name).")
@click.option("--no-samples", is_flag=True, help="dataset: leave the per-run samples out (medians only).")
@click.pass_obj
def export(obj: Context, fmt: str, tuning_id: int | None, kernel_names: tuple[str, ...], origin: str | None,
           strategy: str | None, output: Path | None, dataset_name: str | None, no_samples: bool) -> None:
    """Export stored measurements: T4 or Kernel Tuner files, JSON lines, or a dataset folder."""
    from agent.dataset import export_dataset
    from agent.interchange.export import export_tuning

    with obj.open_store() as store:
        if fmt == "dataset":
            if output is None:
                raise ConfigError("--format dataset needs --output FOLDER")
            manifest = export_dataset(store, output, name=dataset_name or output.name, kernels=kernel_names,
                                      origin=origin, strategy=strategy, samples=not no_samples,
                                      commands=[_command_line()])
            click.echo(f"{output}: {manifest['counts']['records']} records in {manifest['counts']['cases']} cases")
            return
        if fmt == "jsonl":
            rows = store.export_runs(tuning_id=tuning_id, kernels=kernel_names, origin=origin, strategy=strategy)
            write_text(output, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            return
        document = export_tuning(store, fmt=fmt, tuning_id=tuning_id, kernels=kernel_names, origin=origin,
                                 strategy=strategy)
    write_text(output, json.dumps(document, indent=1) + "\n")
