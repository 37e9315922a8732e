"""Data commands: collect a dataset by measuring, import and export measurements."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from agent.cli.options import json_option
from agent.cli.output import emit, seconds, write_text
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
    import shlex

    from agent import hardware
    from agent.bench.compile import Toolchain
    from agent.collect import CollectOptions, collect_case, plan_cases
    from agent.dataset import export_dataset
    from agent.hardware.targets import available_targets
    from agent.kernels.problem import parse_shape
    from agent.kernels.registry import find_kernel, kernel_dirs
    from agent.kernels.workloads import find_workload

    try:
        core_counts = sorted({int(c) for c in cores.split(",") if c.strip()})
    except ValueError:
        raise ConfigError(f"--cores {cores!r} is not a comma-separated list of integers") from None
    if not core_counts or min(core_counts) < 1:
        raise ConfigError(f"--cores {cores!r}: core counts must be positive")
    if configs_per_case < 1:
        raise ConfigError(f"--configs {configs_per_case}: must be at least 1")
    if preset and (kernel_names or shapes):
        raise ConfigError("--preset already names kernels and shapes; drop --kernel/--shapes")
    problems = []
    if preset:
        problems = [problem for _, problem in find_workload(preset).problems()]
    else:
        for name in kernel_names or tuple(sorted(kernel_dirs())):
            spec = find_kernel(name)
            wanted = [s.strip() for s in shapes.split(";") if s.strip()] if shapes else \
                [s for s in spec.shapes if s != "small"]
            problems.extend(parse_shape(spec, s) for s in wanted)
    profile = hardware.probe(measure_bandwidth=False, compiler=obj.settings.compiler)
    usable = available_targets(profile)
    chosen_targets = list(targets) or usable
    too_many = [n for n in core_counts if n > profile.logical_cores]
    if too_many:
        raise ConfigError(f"--cores {cores}: this machine has {profile.logical_cores} hardware threads")
    toolchains = {t: Toolchain.detect(obj.settings.compiler, t, cpu_tag=profile.fingerprint())
                  for t in chosen_targets}
    cases = plan_cases(problems, chosen_targets, core_counts)
    options = CollectOptions(configs_per_case=configs_per_case, seed=seed, remeasure=remeasure)
    if dry_run:
        from agent.collect import case_configs, case_space

        rows = []
        for case in cases:
            planned, size = case_configs(case_space(case, profile), configs_per_case, seed)
            rows.append({"kernel": case.problem.spec.name, "shape": case.problem.key, "target": case.target,
                         "cores": case.cores, "space": size, "planned": len(planned)})
        emit(rows, as_json, title=f"{len(rows)} cases")
        return
    results, failures = [], []
    started = time.monotonic()
    with obj.open_store() as store:
        for index, case in enumerate(cases, start=1):
            result = collect_case(case, profile=profile, store=store, toolchain=toolchains[case.target],
                                  cache_dir=obj.settings.cache_dir, options=options)
            results.append(result)
            if result.valid == 0:
                failures.append(result)
            if not as_json:
                _print_case(index, len(cases), result)
        wall_s = time.monotonic() - started
        manifest = None
        if export_dir:
            manifest = export_dataset(
                store, export_dir, name=dataset_name or Path(export_dir).name,
                commands=[shlex.join(["edgetune", *sys.argv[1:]])], strategy="collect", origin="measured",
                kernels=sorted({c.problem.spec.name for c in cases}),
                notes={"collect_wall_s_last_run": round(wall_s, 1), "targets": chosen_targets,
                       "cores": core_counts, "configs_per_case": configs_per_case, "seed": seed})
    summary = {
        "cases": len(results), "measured_now": sum(r.measured_now for r in results),
        "skipped": sum(r.state == "skipped" for r in results), "wall_s": round(wall_s, 1),
        "without_valid_config": [r.case.label for r in failures],
        "dataset": str(export_dir) if export_dir else None,
        "records": manifest["counts"]["records"] if manifest else None,
    }
    if as_json:
        click.echo(json.dumps({**summary, "results": [_case_dict(r) for r in results]}, indent=2))
    else:
        click.echo(f"{summary['cases']} cases ({summary['skipped']} already complete), "
                   f"{summary['measured_now']} configurations measured now, in {wall_s:.0f} s"
                   + (f"; dataset {export_dir}: {summary['records']} records" if manifest else ""))
    if failures:
        raise EdgetuneError(f"{len(failures)} case(s) have no valid configuration (every candidate failed "
                            f"or disagreed with the reference), first: {failures[0].case.label}; "
                            "see `edgetune runs --status correctness`")


def _case_dict(result: Any) -> dict[str, Any]:
    return {"kernel": result.case.problem.spec.name, "shape": result.case.problem.key,
            "target": result.case.target, "cores": result.case.cores, "state": result.state,
            "space": result.space_size, "planned": result.planned, "measured_now": result.measured_now,
            "valid": result.valid, "best_s": result.best_s, "default_s": result.default_s,
            "speedup": result.speedup, "wall_s": round(result.wall_s, 2), "tuning_id": result.tuning_id}


def _print_case(index: int, total: int, result: Any) -> None:
    speed = f", best/default {result.speedup:.2f}x" if result.speedup else ""
    best_text = seconds(result.best_s) if result.best_s else "no valid configuration"
    click.echo(f"[{index}/{total}] {result.case.label}: {result.state}, {result.valid}/{result.planned} valid "
               f"(space {result.space_size}), best {best_text}{speed}, {result.wall_s:.1f} s")


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
    from agent.interchange import ImportError_, expand_paths, import_path

    parsed_shape = None
    if shape:
        try:
            parsed_shape = {k.strip(): int(v) for k, v in (p.split("=", 1) for p in shape.split(","))}
        except ValueError:
            raise ConfigError(f"--shape {shape!r}: expected NAME=VALUE pairs with integer values") from None
    rows, errors = [], []
    files = expand_paths(list(paths))
    with obj.open_store() as store:
        for path in files:
            root = path.parent.parent if path.is_file() else path
            try:
                outcomes = import_path(store, path, fmt=fmt, device=device, kernel=kernel, shape=parsed_shape,
                                       origin_root=root, replace_existing=replace_existing)
            except ImportError_ as exc:
                if len(files) == 1:
                    raise
                errors.append(str(exc))
                click.echo(f"edgetune: error: {exc}", err=True)
                continue
            rows.extend({"path": str(o.path), "kernel": o.kernel, "device": o.device, "state": o.state,
                         "runs": o.runs} for o in outcomes)
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
    import shlex

    from agent.dataset import export_dataset, parse_shape_key
    from agent.interchange.kerneltuner import write_kernel_tuner
    from agent.interchange.t4 import write_t4

    with obj.open_store() as store:
        if fmt == "dataset":
            if output is None:
                raise ConfigError("--format dataset needs --output FOLDER")
            manifest = export_dataset(store, output, name=dataset_name or output.name, kernels=kernel_names,
                                      origin=origin, strategy=strategy, samples=not no_samples,
                                      commands=[shlex.join(["edgetune", *sys.argv[1:]])])
            click.echo(f"{output}: {manifest['counts']['records']} records in {manifest['counts']['cases']} cases")
            return
        if fmt == "jsonl":
            rows = store.export_runs(tuning_id=tuning_id, kernels=kernel_names, origin=origin, strategy=strategy)
            write_text(output, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            return
        tunings = store.export_tunings(tuning_id=tuning_id, kernels=kernel_names, origin=origin,
                                       strategy=strategy)
        if len(tunings) != 1:
            raise EdgetuneError(f"{len(tunings)} tuning sessions match; {fmt} holds one: pick it with "
                                "--tuning ID (see `edgetune runs` or `edgetune best`)")
        tuning = tunings[0]
        runs_ = list(store.export_runs(tuning_id=tuning["id"]))
        device_row = next((d for d in store.devices() if d["fingerprint"] == tuning["device"]), None)
        profile = json.loads(device_row["profile"]) if device_row else {}
        kernel_row = next((k for k in store.kernels() if k["key"] == tuning["kernel_key"]), None)
        params = json.loads(kernel_row["space"])["params"] if kernel_row else []
        shape = parse_shape_key(tuning["shape"])
        if fmt == "t4":
            document = write_t4(runs_, {
                "kernel": tuning["kernel"], "kernel_key": tuning["kernel_key"], "shape": shape,
                "target": tuning["target"], "compiler": tuning["compiler"], "cores": tuning["cores"],
                "device": {"fingerprint": tuning["device"], "name": profile.get("name", ""), "profile": profile},
                "params": params, "exported_by": "edgetune",
            })
        else:
            document = write_kernel_tuner(runs_, device_name=str(profile.get("name", tuning["device"])),
                                          kernel_name=tuning["kernel"], shape=shape, params=params)
        write_text(output, json.dumps(document, indent=1) + "\n")
