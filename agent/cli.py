"""The ``edgetune`` command line: thin wrappers over the library functions of the same name.

Only this module turns errors into messages: an :class:`EdgetuneError` becomes one line
on stderr and exit status 1; an unexpected exception becomes one line naming it and exit
status 70 (``--debug`` shows the traceback); a store locked by another process exits 75
(EX_TEMPFAIL: try again later); Ctrl-C exits 130. Tables go to stdout;
progress goes to stderr, only on a terminal, and never with ``--json``.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.daemon.privileges import drop_to_store_owner
from agent.errors import ConfigError, EdgetuneError, StoreBusy
from agent.settings import Settings
from agent.telemetry import STATUSES

EXIT_ERROR = 1
EXIT_INTERNAL = 70
EXIT_TEMPFAIL = 75  # the store is locked by another process: try again later
EXIT_INTERRUPTED = 130

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class _Context:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open_store(self):
        from agent.store import Store

        # Root (an updater, an admin on a device) acts as the service user that owns the store's
        # folder: SQLite's -wal/-shm files made by root would lock the daemon out of its store.
        drop_to_store_owner(self.settings.db_path)
        return Store.open(self.settings.db_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", type=click.Path(dir_okay=False), envvar="EDGETUNE_DB",
              help="SQLite store (default: [paths] db of the config file, else "
                   "$XDG_STATE_HOME/edgetune/edgetune.db; env EDGETUNE_DB).")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(package_name="edgetune")
@click.pass_context
def cli(ctx: click.Context, db: str | None, debug: bool) -> None:
    """edgetune: on-device kernel autotuning.

    Probe this machine, tune a kernel (compile, verify against a reference, time in an
    isolated worker), and keep every measurement in a local SQLite store.
    """
    settings = Settings.from_environ()
    if db:
        settings = replace(settings, db_path=Path(db))
    ctx.obj = _Context(settings)


@cli.command()
@click.option("--profile", "profile_name", metavar="NAME|PATH",
              help="Show a device profile from profiles/devices (or a TOML file) instead of probing.")
@click.option("--no-bandwidth", is_flag=True, help="Skip the memory-bandwidth measurement (faster).")
@click.option("--save", type=click.Path(dir_okay=False), help="Also write the profile to this TOML file.")
@click.option("--list", "list_profiles", is_flag=True, help="List the shipped device profiles.")
@json_option
@click.pass_obj
def probe(obj: _Context, profile_name: str | None, no_bandwidth: bool, save: str | None,
          list_profiles: bool, as_json: bool) -> None:
    """Describe this machine's hardware (cores, caches, SIMD, bandwidth, compiler)."""
    from agent import hardware

    if list_profiles:
        profiles = [hardware.load_profile(p) for p in hardware.list_profiles(hardware.default_profiles_dir())]
        rows = [{"name": p.name, "model": p.model, "arch": p.arch, "cores": p.logical_cores,
                 "simd": p.simd_isa, "fingerprint": p.fingerprint()} for p in profiles]
        _emit(rows, as_json, title="Device profiles")
        return
    if profile_name:
        profile = hardware.load_profile(hardware.find_profile(profile_name, hardware.default_profiles_dir()))
    else:
        profile = hardware.probe(measure_bandwidth=not no_bandwidth, compiler=obj.settings.compiler,
                                 cache_dir=obj.settings.cache_dir)
    if save:
        hardware.save_profile(profile, save)
    data = {**profile.to_dict(), "fingerprint": profile.fingerprint()}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title="Hardware profile", show_header=False)
    for key, value in data.items():
        table.add_row(key, _human(key, value))
    Console().print(table)


@cli.command()
@json_option
@click.pass_obj
def kernels(obj: _Context, as_json: bool) -> None:
    """List the kernels that can be tuned, their spaces (valid configurations at the default shape on this
    machine, -march=native), and how often each was tuned here."""
    from agent import hardware
    from agent.hardware.targets import target_vector_bits
    from agent.kernels.problem import parse_shape
    from agent.kernels.registry import find_kernel, kernel_dirs
    from agent.kernels.space import Space

    profile = hardware.probe(measure_bandwidth=False, compiler=obj.settings.compiler)
    bits = target_vector_bits("native", profile)

    with obj.open_store() as store:
        tuned: dict[str, int] = {}
        for row in store.best():
            tuned[row["kernel"]] = tuned.get(row["kernel"], 0) + 1
    rows = []
    for name, directory in sorted(kernel_dirs().items()):
        spec = find_kernel(str(directory))
        space = (Space.build(parse_shape(spec, None), vector_bits=bits, max_threads=profile.logical_cores)
                 if spec.default_shape else None)
        rows.append({
            "name": name, "key": spec.key,
            "params": " ".join(f"{p.name}:{p.role}" for p in spec.params),
            "valid_configs": space.size() if space else None,
            "shapes": " ".join(spec.shapes), "tuned_shapes": tuned.get(name, 0),
            "description": spec.description,
        })
    _emit(rows, as_json, title="Kernels")


@cli.command()
@click.argument("kernel")
@click.option("--shape", help="Problem shape, e.g. M=256,N=256,K=256, or a named shape of the kernel.")
@click.option("--strategy", default="model", show_default=True,
              help="model (predict, benchmark the top few, refine), or a search: local, random, exhaustive, "
                   "opentuner.")
@click.option("--budget", default=None,
              help="Evaluations (e.g. 40) or wall time (30s, 2m); 'all' for no limit. "
                   "Default: 5 for model (the default configuration among them), all for exhaustive, else 40.")
@click.option("--target", default="native", show_default=True,
              help="-march target: native, x86-64, x86-64-v2, x86-64-v3, armv8-a ...")
@click.option("--seed", default=0, show_default=True, help="Seed of the search and the inputs.")
@click.option("--cache", "cache_mode", type=click.Choice(["auto", "cold", "hot"]), default="auto",
              show_default=True, help="Flush caches between runs: auto = when the data fits in the LLC.")
@click.option("--timeout", "timeout_s", default=10.0, show_default=True,
              help="Seconds one run of a candidate may take before it is killed.")
@click.option("--config", "configs", multiple=True, metavar="NAME=VALUE,...",
              help="Measure exactly this configuration (repeatable) against the default, no search.")
@click.option("--models", "models_dir", type=click.Path(path_type=Path),
              help="Folder of the model files (default: EDGETUNE_MODELS, else the shipped models/).")
@click.option("--cloud", "cloud_url", metavar="URL",
              help="Ranking service asked when the model is not confident (default: EDGETUNE_CLOUD_URL; "
                   "the token comes from EDGETUNE_CLOUD_TOKEN).")
@click.option("--cloud-kind", type=click.Choice(["fleet", "openai"]), default=None,
              help="fleet: edgetune's /v1/rank; openai: any OpenAI-compatible /v1/completions with logprobs.")
@json_option
@click.pass_obj
def tune(obj: _Context, kernel: str, shape: str | None, strategy: str, budget: str | None,
         target: str, seed: int, cache_mode: str, timeout_s: float, configs: tuple[str, ...],
         models_dir: Path | None, cloud_url: str | None, cloud_kind: str | None, as_json: bool) -> None:
    """Tune KERNEL (a name or a path to kernel.toml) for one shape on this machine.

    The default strategy predicts a ranking with the on-device model (asking the cloud only
    when it is not confident), benchmarks the default and the best predictions, and spends
    any budget left refining around the winner. Without a usable model it says so and runs
    local search.
    """
    from agent.kernels.problem import parse_shape
    from agent.kernels.registry import find_kernel
    from agent.kernels.space import WIDEST_VECTOR_BITS, Space, parse_config
    from agent.tuning_session import TuningSession

    if timeout_s <= 0:
        raise click.BadParameter("must be positive", param_hint="--timeout")
    settings = replace(obj.settings, models_dir=models_dir or obj.settings.models_dir)
    session = TuningSession(settings, cloud=_cloud_settings(settings, cloud_url, cloud_kind))
    options = session.options(strategy, budget=budget, target=target, seed=seed, cache=cache_mode,
                              timeout_s=timeout_s)  # unknown names fail before probing or compiling anything
    problem = parse_shape(find_kernel(kernel), shape)
    requested = tuple(Space.build(problem, vector_bits=WIDEST_VECTOR_BITS).check(parse_config(c)) for c in configs)
    session.backend(problem.spec.backend, target)  # probe and find the toolchain before the store opens
    with obj.open_store() as store, _progress(as_json, problem, options.budget, strategy) as on_result:
        result = session.tune(problem, replace(options, configs=requested), store=store, on_result=on_result)
    for note in result.notes:
        click.echo(f"warning: {note}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    _print_tune_result(result)


def _cloud_settings(settings: Settings, url: str | None, kind: str | None) -> Any:
    """The cloud client's settings from the command line and the environment (None: no cloud)."""
    from agent.predict.cloud import cloud_settings_from

    return cloud_settings_from(settings, url, kind)


@cli.command()
@click.option("--kernel", help="Only this kernel.")
@json_option
@click.pass_obj
def best(obj: _Context, kernel: str | None, as_json: bool) -> None:
    """Show the best stored configuration per kernel, shape and target on each device."""
    with obj.open_store() as store:
        rows = store.best(kernel=kernel)
    columns = ["kernel", "shape", "target", "config", "median_s", "speedup", "device", "updated_at", "stale"]
    _emit(rows, as_json, title="Best configurations", columns=columns)


@cli.command()
@click.option("--kernel", help="Only this kernel.")
@click.option("--tuning", "tuning_id", type=int, help="Only runs of this tuning session.")
@click.option("--status", type=click.Choice(STATUSES),
              help="Only runs with this outcome (T4 vocabulary).")
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
@json_option
@click.pass_obj
def runs(obj: _Context, kernel: str | None, tuning_id: int | None, status: str | None,
         limit: int, as_json: bool) -> None:
    """List stored measurements (every candidate, valid or not), newest first."""
    with obj.open_store() as store:
        rows = store.runs(kernel=kernel, tuning_id=tuning_id, status=status, limit=limit)
    columns = ["id", "tuning_id", "kernel", "shape", "config", "status", "median_s", "phase", "reason"]
    if as_json:
        for row in rows:
            row["samples"] = json.loads(row["samples"] or "[]")
    _emit(rows, as_json, title="Runs", columns=columns)


@cli.command()
@json_option
def presets(as_json: bool) -> None:
    """List the workload presets: real models' layers as kernel + shape (profiles/workloads)."""
    from agent.kernels.workloads import find_workload, list_workloads

    rows = []
    for path in list_workloads():
        workload = find_workload(str(path))
        rows.append({"name": path.stem, "layers": len(workload.layers),
                     "kernels": " ".join(sorted({layer.kernel for layer in workload.layers})),
                     "description": workload.description})
    _emit(rows, as_json, title="Workload presets")


@cli.command()
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
def collect(obj: _Context, kernel_names: tuple[str, ...], preset: str | None, shapes: str | None,
            targets: tuple[str, ...], cores: str, configs_per_case: int, seed: int, remeasure: bool,
            export_dir: str | None, dataset_name: str | None, dry_run: bool, as_json: bool) -> None:
    """Sweep kernels x shapes x compiler targets x core counts into the store (a dataset).

    Resumable: every measurement is stored as it is made, so running the same command
    again after an interruption measures only what is missing.
    """
    import shlex

    from agent import hardware
    from agent.collect import CollectOptions, collect_case, detect_backends, plan_cases
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
    cases = plan_cases(problems, chosen_targets, core_counts)
    backends = detect_backends(cases, compiler=obj.settings.compiler, device=profile.fingerprint())
    options = CollectOptions(configs_per_case=configs_per_case, seed=seed, remeasure=remeasure)
    if dry_run:
        from agent.collect import case_configs, case_space

        rows = []
        for case in cases:
            planned, size = case_configs(case_space(case, profile, backends[case.backend_key]), configs_per_case, seed)
            rows.append({"kernel": case.problem.spec.name, "shape": case.problem.key, "target": case.target,
                         "cores": case.cores, "space": size, "planned": len(planned)})
        _emit(rows, as_json, title=f"{len(rows)} cases")
        return
    results, failures = [], []
    started = time.monotonic()
    with obj.open_store() as store:
        for index, case in enumerate(cases, start=1):
            result = collect_case(case, profile=profile, store=store, backend=backends[case.backend_key],
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
    best_text = _seconds(result.best_s) if result.best_s else "no valid configuration"
    click.echo(f"[{index}/{total}] {result.case.label}: {result.state}, {result.valid}/{result.planned} valid "
               f"(space {result.space_size}), best {best_text}{speed}, {result.wall_s:.1f} s")


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["auto", "kernel-tuner", "t4", "dataset"]), default="auto",
              show_default=True, help="File format; auto detects it from the content.")
@click.option("--device", help="Device name, for files that do not say (T4) or to override it.")
@click.option("--kernel", help="Kernel name, for files that do not say (T4) or to override it.")
@click.option("--shape", metavar="NAME=VALUE,...", help="Problem shape, for T4 files (they do not say).")
@click.option("--replace", "replace_existing", is_flag=True, help="Import files that were imported before again.")
@json_option
@click.pass_obj
def import_(obj: _Context, paths: tuple[Path, ...], fmt: str, device: str | None, kernel: str | None,
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
    _emit(rows, as_json, title="Imported")
    if errors:
        raise EdgetuneError(f"{len(errors)} of {len(errors) + len(rows)} file(s) not imported (see above)")


@cli.command()
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
def export(obj: _Context, fmt: str, tuning_id: int | None, kernel_names: tuple[str, ...], origin: str | None,
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
            _write_text(output, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
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
        _write_text(output, json.dumps(document, indent=1) + "\n")


DEFAULT_DATASETS = ("models/data/cpu-epyc-avx512-2026-11-25", "models/data/gpu-kernel-tuner-hub")


def _datasets(paths: tuple[Path, ...]) -> list[str]:
    chosen = [str(p) for p in paths] or [d for d in DEFAULT_DATASETS if Path(d).is_dir()]
    if not chosen:
        raise ConfigError("no dataset given and none of the default ones is here "
                          f"({', '.join(DEFAULT_DATASETS)}); pass dataset folders")
    return chosen


def _training_modules() -> None:
    missing = [m for m in ("torch", "gguf", "llama_cpp", "lightgbm", "onnxmltools") if not _importable(m)]
    if missing:
        raise ConfigError(f"training needs {', '.join(missing)}: pip install 'edgetune[train]'")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@cli.command()
@click.argument("datasets", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", default="models", show_default=True, type=click.Path(path_type=Path),
              help="Folder for the model files, vocab.json and metrics.json.")
@click.option("--teacher-steps", default=None, type=click.IntRange(1), help="Training steps of the teacher.")
@click.option("--student-steps", default=None, type=click.IntRange(1), help="Training steps of the student.")
@click.option("--seed", default=0, show_default=True, help="Seed of initialisation and sampling.")
@click.option("--card/--no-card", default=True, show_default=True,
              help="Write the model card (README.md) from metrics.json and the eval report.")
@click.option("--smoke", is_flag=True, help="Tiny models and 5 steps: checks the pipeline in seconds (not for use).")
@click.option("--threads", type=click.IntRange(1), help="PyTorch threads (default: the machine's cores).")
@click.option("--only", type=click.Choice(["all", "cost-model"]), default="all", show_default=True,
              help="cost-model: train only the ONNX cost model (seconds), keep the GGUF files.")
@click.option("--from-fleet", "from_fleet", metavar="URL",
              help="Also train on the fleet's measurements (operator token from EDGETUNE_FLEET_OPERATOR_TOKEN).")
@click.option("--pull-only", "pull_only", metavar="DIR", type=click.Path(path_type=Path),
              help="With --from-fleet: write the fleet's dataset to DIR and train nothing.")
@json_option
def train(datasets: tuple[Path, ...], out_dir: Path, teacher_steps: int | None, student_steps: int | None,
          seed: int, card: bool, smoke: bool, threads: int | None, only: str, from_fleet: str | None,
          pull_only: Path | None, as_json: bool) -> None:
    """Train the teacher, the distilled 4-bit student and the cost model on DATASETS (default: models/data/*).

    Same datasets and seed, same models. Writes edgetune-student-q4_0.gguf,
    edgetune-teacher-q8_0.gguf, edgetune-cost.onnx, vocab.json, metrics.json and the model
    card README.md. A few minutes per model on two cores. --from-fleet URL pulls the fleet's
    runs into a dataset first (kept only with --pull-only DIR, which trains nothing).
    """
    if pull_only is not None and not from_fleet:
        raise click.UsageError("--pull-only needs --from-fleet URL")
    if from_fleet and pull_only is not None:
        _pull_and_report(from_fleet, pull_only, as_json=as_json)
        return
    _training_modules()
    if from_fleet:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgetune-fleet-") as scratch:
            pulled = Path(scratch) / "fleet"
            _pull_and_report(from_fleet, pulled, as_json=as_json, quiet=True)
            train.callback(datasets=(*datasets, pulled), out_dir=out_dir, teacher_steps=teacher_steps,  # type: ignore[misc]
                           student_steps=student_steps, seed=seed, card=card, smoke=smoke, threads=threads,
                           only=only, from_fleet=None, pull_only=None, as_json=as_json)
        return
    from agent.train.fit import TrainRun
    from agent.train.pipeline import train_and_export, train_cost_model

    log = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    if only == "cost-model":
        entry = train_cost_model(_datasets(datasets), out_dir, seed=seed, log=log)
        if card and (out_dir / "edgetune-student-q4_0.gguf").is_file():
            from agent.train.card import write_card

            write_card(out_dir)
        if as_json:
            click.echo(json.dumps(entry, indent=1))
        return

    run = (TrainRun().tiny(5) if smoke else TrainRun()).seeded(seed)
    if teacher_steps:
        run = replace(run, teacher_train=replace(run.teacher_train, steps=teacher_steps))
    if student_steps:
        run = replace(run, student_train=replace(run.student_train, steps=student_steps))
    metrics = train_and_export(_datasets(datasets), out_dir, run, log=log, threads=threads)
    if card:
        from agent.train.card import write_card

        write_card(out_dir)
    if as_json:
        click.echo(json.dumps(metrics, indent=1))


@cli.command("eval")
@click.argument("datasets", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", default="models/eval", show_default=True, type=click.Path(path_type=Path),
              help="Folder for report.md, report.json and report.png.")
@click.option("--fold", "folds", multiple=True, metavar="NAME",
              help="Only this fold (repeatable): shape+simd, kernel+gpu-1, kernel+gpu-2, kernel+gpu-3.")
@click.option("--quick", is_flag=True, help="A smoke run: tiny models, few steps, 3 cases per split, no OpenTuner.")
@click.option("--no-opentuner", is_flag=True, help="Leave the OpenTuner baseline out (it needs the train extra).")
@click.option("--no-q4", is_flag=True, help="Leave the quantised llama.cpp student out.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1),
              help="Folds run side by side, one process and one thread each.")
@click.option("--fresh", is_flag=True, help="Run every fold again (default: reuse folds saved in OUTPUT/folds/).")
@json_option
def eval_(datasets: tuple[Path, ...], out_dir: Path, folds: tuple[str, ...], quick: bool, no_opentuner: bool,
          no_q4: bool, jobs: int, fresh: bool, as_json: bool) -> None:
    """Evaluate on held-out splits: unseen shapes, SIMD level, kernels and GPUs, against baselines.

    Trains a teacher and a student per fold (never on the cases it tests), replays every
    held-out case's measured table with the models and with random search, nearest-case
    reuse, a LightGBM cost model, OpenTuner and Kernel Tuner's strategies, and writes
    Markdown, JSON and a PNG plot. The full run takes most of an hour on two cores.
    """
    _training_modules()
    from agent.train.evaluate import EvalOptions, evaluate
    from agent.train.splits import SPLITS  # noqa: F401 - the fold names are documented above

    options = EvalOptions(folds=folds, opentuner=not (no_opentuner or quick), quantized=not no_q4)
    if quick:
        options = replace(options, run=options.run.tiny(20), max_cases=3)
    log = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    report = evaluate(_datasets(datasets), out_dir, options, log=log, jobs=jobs, fresh=fresh)
    if (out_dir.parent / "metrics.json").is_file():  # models/eval beside a trained models/: refresh its card
        from agent.train.card import write_card

        calibration = out_dir / "calibration.json"
        if calibration.is_file() and not quick and not folds:  # only a full run calibrates the shipped models
            shutil.copyfile(calibration, out_dir.parent / "confidence.json")
        write_card(out_dir.parent)
    if as_json:
        click.echo(json.dumps(report["splits"], indent=1))
    else:
        click.echo((out_dir / "report.md").read_text(encoding="utf-8"), nl=False)


@cli.command()
@click.option("--batch", "batch_size", default=500, show_default=True, type=click.IntRange(1, 1000),
              help="Records per request.")
@json_option
@click.pass_obj
def upload(obj: _Context, batch_size: int, as_json: bool) -> None:
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


# -- the daemon and what updaters and admins call ------------------------------------------


@cli.command()
@click.option("--no-bandwidth", is_flag=True, help="Skip the memory-bandwidth measurement at start-up.")
@click.pass_obj
def daemon(obj: _Context, no_bandwidth: bool) -> None:
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


@cli.group()
def hook() -> None:
    """Hooks for firmware updaters (packaging/hooks has ready-made Mender, RAUC and SWUpdate scripts)."""


@hook.command("post-update")
@click.option("--wait", is_flag=True, help="Tune what is stale now instead of leaving it to the daemon.")
@click.option("--budget", "budget", metavar="DURATION", help="With --wait: stop after this long (90s, 10m).")
@click.option("--lock-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for the store's lock before exiting 75.")
@json_option
@click.pass_obj
def hook_post_update(obj: _Context, wait: bool, budget: str | None, lock_timeout: float, as_json: bool) -> None:
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
    if result.exit_code:
        sys.exit(result.exit_code)


@cli.command()
@json_option
@click.pass_obj
def status(obj: _Context, as_json: bool) -> None:
    """Show what this device has tuned, what is queued, the daemon's state and the last upload (read-only)."""
    from agent.daemon.status import read_status

    drop_to_store_owner(obj.settings.db_path)
    data = read_status(obj.settings)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    _print_status(data)


def _print_status(data: dict[str, Any]) -> None:
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
        _emit([{"layer": layer["label"], "kernel": layer["kernel"], "shape": layer["shape"], "state": layer["state"],
                "speedup": layer["speedup"]} for layer in layers], False, title=f"Preset {data['preset']}")
    if data["queue"]:
        _emit(data["queue"], False, title="Queue", columns=["id", "kernel", "shape", "target", "state", "reason"])


@cli.group()
def queue() -> None:
    """The daemon's tuning requests, worked oldest first."""


@queue.command("add")
@click.argument("kernel")
@click.option("--shape", help="Problem size (M=..,N=..) or a named shape; default: the kernel's default.")
@click.option("--target", default="native", show_default=True, help="Compiler -march target.")
@click.pass_obj
def queue_add(obj: _Context, kernel: str, shape: str | None, target: str) -> None:
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
def queue_list(obj: _Context, show_all: bool, as_json: bool) -> None:
    """List queued and running requests (with --all, finished ones too)."""
    from agent.store import QUEUE_STATES

    with obj.open_store() as store:
        rows = store.queue(states=QUEUE_STATES if show_all else ("queued", "running"), limit=1000)
    _emit(rows, as_json, title="Queue", columns=["id", "kernel", "shape", "target", "state", "requested_by",
                                                  "reason", "error"])


@cli.group()
def fleet() -> None:
    """The fleet service: collects telemetry from devices (needs the fleet extra: pip install edgetune[fleet]).

    Its data lives in a SQLite file or a PostgreSQL database: see --db.
    """


fleet_db_option = click.option(
    "--db", "fleet_db", metavar="PATH|URL",
    help="The fleet's database: a SQLite file (a path or sqlite:///path), or PostgreSQL "
         "(postgresql://user:password@host:port/database). Default: fleet.db next to the device store.")


def _fleet_db(settings: Settings, fleet_db: str | None) -> str:
    return fleet_db or str(settings.db_path.parent / "fleet.db")


@fleet.command("serve")
@fleet_db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8750, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--teacher", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="GGUF model that answers POST /v1/rank, loaded once at start "
                   "(default: edgetune-teacher-q8_0.gguf in EDGETUNE_MODELS, else the shipped models/).")
@click.option("--rank-upstream", metavar="URL", default=None,
              help="Answer POST /v1/rank by asking this OpenAI-compatible server's /v1/completions with logprobs "
                   "instead of the teacher (bearer token from EDGETUNE_FLEET_UPSTREAM_TOKEN).")
@click.option("--rank-upstream-model", metavar="NAME", default=None, help="The model name sent upstream.")
@click.option("--rank-timeout", default=10.0, show_default=True, type=click.FloatRange(0.01, 600),
              help="Seconds one /v1/rank request may take; past them it answers 503 with Retry-After.")
@click.pass_obj
def fleet_serve(obj: _Context, fleet_db: str | None, host: str, port: int, teacher: Path | None,
                rank_upstream: str | None, rank_upstream_model: str | None, rank_timeout: float) -> None:
    """Run the fleet service (operator token from EDGETUNE_FLEET_OPERATOR_TOKEN).

    POST /v1/rank, the devices' cloud fallback, is answered by the teacher model, or with
    --rank-upstream by an OpenAI-compatible server.
    """
    import os

    token = os.environ.get("EDGETUNE_FLEET_OPERATOR_TOKEN", "")
    if not token:
        raise ConfigError("set EDGETUNE_FLEET_OPERATOR_TOKEN: the operator token guards the fleet's reads")
    try:
        import uvicorn

        from agent.fleet.app import create_app
    except ImportError as exc:
        raise ConfigError(f"the fleet service needs its extra: install edgetune[fleet] ({exc})") from None
    from agent.fleet.rank import UPSTREAM_TOKEN_ENV, RankService, TeacherRanker, UpstreamRanker, default_teacher

    if rank_upstream and teacher:
        raise ConfigError("--teacher and --rank-upstream are exclusive: /v1/rank is answered by one of them")
    if teacher is not None and not teacher.is_file():
        raise ConfigError(f"--teacher {teacher}: no such file")
    ranker = (UpstreamRanker(rank_upstream, token=os.environ.get(UPSTREAM_TOKEN_ENV), model=rank_upstream_model,
                             timeout_s=rank_timeout) if rank_upstream else TeacherRanker(teacher or default_teacher()))
    ranking = RankService(ranker, deadline_s=rank_timeout)
    app = create_app(_fleet_db(obj.settings, fleet_db), token, ranking=ranking)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@fleet.command("add-device")
@click.argument("name")
@fleet_db_option
@click.pass_obj
def fleet_add_device(obj: _Context, name: str, fleet_db: str | None) -> None:
    """Register device NAME and print its token (shown once; only its hash is kept)."""
    from agent.fleet.storage import FleetStore

    click.echo(FleetStore(_fleet_db(obj.settings, fleet_db)).add_device(name))


@fleet.command("pull")
@click.argument("url")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="The dataset folder to write (new, empty, or an older dataset, replaced when complete).")
@click.option("--device", default=None, help="Only this device's runs (its fleet name).")
@click.option("--kernel", default=None, help="Only this kernel's runs.")
@json_option
def fleet_pull(url: str, out_dir: Path, device: str | None, kernel: str | None, as_json: bool) -> None:
    """Fetch the fleet's search-phase runs at URL as a dataset folder (operator token from
    EDGETUNE_FLEET_OPERATOR_TOKEN); `edgetune train DIR` trains on it."""
    _pull_and_report(url, out_dir, as_json=as_json, device=device, kernel=kernel)


def _pull_and_report(url: str, out_dir: Path, *, as_json: bool, quiet: bool = False, **filters: str | None) -> None:
    import os

    from agent.fleet.pull import OPERATOR_TOKEN_ENV, pull_dataset

    manifest = pull_dataset(url, os.environ.get(OPERATOR_TOKEN_ENV, ""), out_dir, **filters)
    counts = manifest["counts"]
    if as_json and not quiet:
        click.echo(json.dumps({"path": str(out_dir), "counts": counts}, indent=1))
    elif not as_json:  # quiet: a log line on stderr (stdout is the training's)
        click.echo(f"{out_dir}: {counts['records']} records, {counts['cases']} cases, "
                   f"{len(manifest['devices'])} devices from {url}", err=quiet)


def _write_text(output: Path | None, text: str) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        partial = output.with_name(output.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        raise EdgetuneError(f"cannot write {output}: {exc.strerror or exc}") from None


# -- output helpers -------------------------------------------------------------------------


def _emit(rows: list[dict[str, Any]], as_json: bool, *, title: str,
          columns: Sequence[str] | None = None) -> None:
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
        table.add_row(*(_human(c, row.get(c)) for c in columns))
    Console().print(table)


def _human(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and key.endswith("_s"):
        return _seconds(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int) and key.endswith("_bytes"):
        return _bytes(value)
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def _seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def _bytes(value: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


class _progress:
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
                            best=_seconds(self.fastest) if self.fastest else "-")

        return on_result

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print_tune_result(result: Any) -> None:
    console = Console()
    winner = result.winner
    outcomes = ", ".join(f"{n} {s}" for s, n in sorted(result.outcomes.items()))
    console.print(f"[bold]{result.kernel}[/] {result.shape} on {result.target}: "
                  f"{result.evaluations} evaluations ({outcomes}) in {result.wall_s:.1f} s "
                  f"[dim](tuning #{result.tuning_id}, strategy {result.strategy}, budget {result.budget})[/]")
    if winner is None:
        console.print("[red]No valid configuration found[/]: see `edgetune runs --tuning "
                      f"{result.tuning_id}` for the reasons.")
        return
    rate = f", {result.gflops:.1f} GFLOP/s" if result.gflops else ""
    console.print(f"winner: [bold green]{winner.key}[/]  median {_seconds(winner.median_s)}{rate}")
    if result.default is not None and result.speedup is not None:
        console.print(f"default {result.default.key}: median {_seconds(result.default.median_s)}  "
                      f"-> speed-up [bold]{result.speedup:.2f}x[/]")
    if result.tie:
        console.print("[yellow]the runner-up is within 2% of the winner: treat them as tied[/]")
    if result.winner_source is not None:
        rank = f" (predicted #{result.winner_predicted_rank + 1})" if result.winner_predicted_rank is not None else ""
        console.print(f"winner from: {result.winner_source}{rank}")
    if result.strategy == "model":
        confidence = "unknown (no calibration)" if result.confidence is None else f"{result.confidence:.2f}"
        console.print(f"confidence: {confidence}; cloud: {result.cloud or 'not asked'}")
    if result.timings:
        split = ", ".join(f"{name.removesuffix('_s')} {seconds:.2f} s" for name, seconds in result.timings.items()
                          if seconds)
        if split:
            console.print(f"[dim]time: {split}[/]")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) the status code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    # SIGTERM (systemd, an updater, kill) unwinds like Ctrl-C: the worker is killed and the
    # tuning session is marked interrupted, with every committed run kept.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="edgetune",
                        standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("edgetune: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StoreBusy as exc:
        click.echo(f"edgetune: error: {exc} (try again later)", err=True)
        sys.exit(EXIT_TEMPFAIL)
    except EdgetuneError as exc:
        click.echo(f"edgetune: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo("edgetune: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        click.echo(f"edgetune: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
                   err=True)
        sys.exit(EXIT_INTERNAL)
    return 0


if __name__ == "__main__":
    main()
