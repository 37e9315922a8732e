"""Tuning commands: probe the machine, list kernels and presets, tune, show results."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from agent.cli.options import json_option
from agent.cli.output import emit, human
from agent.cli.output import print_tune_result as _print_tune_result
from agent.cli.output import progress as _progress
from agent.cli.root import Context
from agent.errors import NoValidConfiguration
from agent.settings import CANDIDATE_TIMEOUT_S, Settings
from agent.telemetry import STATUSES

__all__ = ["best", "kernels", "presets", "probe", "runs", "tune"]


@click.command()
@click.option("--profile", "profile_name", metavar="NAME|PATH",
              help="Show a device profile from profiles/devices (or a TOML file) instead of probing.")
@click.option("--no-bandwidth", is_flag=True, help="Skip the memory-bandwidth measurement (faster).")
@click.option("--save", type=click.Path(dir_okay=False), help="Also write the profile to this TOML file.")
@click.option("--list", "list_profiles", is_flag=True, help="List the shipped device profiles.")
@json_option
@click.pass_obj
def probe(obj: Context, profile_name: str | None, no_bandwidth: bool, save: str | None,
          list_profiles: bool, as_json: bool) -> None:
    """Describe this machine's hardware (cores, caches, SIMD, bandwidth, compiler)."""
    from agent import hardware

    if list_profiles:
        profiles = [hardware.load_profile(p) for p in hardware.list_profiles(hardware.default_profiles_dir())]
        rows = [{"name": p.name, "model": p.model, "arch": p.arch, "cores": p.logical_cores,
                 "simd": p.simd_isa, "fingerprint": p.fingerprint()} for p in profiles]
        emit(rows, as_json, title="Device profiles")
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
        table.add_row(key, human(key, value))
    Console().print(table)


@click.command()
@json_option
@click.pass_obj
def kernels(obj: Context, as_json: bool) -> None:
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
    emit(rows, as_json, title="Kernels")


@click.command()
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
@click.option("--timeout", "timeout_s", default=CANDIDATE_TIMEOUT_S, show_default=True,
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
def tune(obj: Context, kernel: str, shape: str | None, strategy: str, budget: str | None,
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
    else:
        _print_tune_result(result)
    if result.winner is None:
        failed = ", ".join(f"{n} {s}" for s, n in sorted(result.outcomes.items())) or "nothing evaluated"
        raise NoValidConfiguration(f"no valid configuration of {result.kernel} at {result.shape} ({failed}); the "
                                   f"reasons are in `edgetune runs --tuning {result.tuning_id}`")


def _cloud_settings(settings: Settings, url: str | None, kind: str | None) -> Any:
    """The cloud client's settings from the command line and the environment (None: no cloud)."""
    from agent.predict.cloud import cloud_settings_from

    return cloud_settings_from(settings, url, kind)


@click.command()
@click.option("--kernel", help="Only this kernel.")
@json_option
@click.pass_obj
def best(obj: Context, kernel: str | None, as_json: bool) -> None:
    """Show the best stored configuration per kernel, shape and target on each device."""
    with obj.open_store() as store:
        rows = store.best(kernel=kernel)
    columns = ["kernel", "shape", "target", "config", "median_s", "speedup", "device", "updated_at", "stale"]
    emit(rows, as_json, title="Best configurations", columns=columns)


@click.command()
@click.option("--kernel", help="Only this kernel.")
@click.option("--tuning", "tuning_id", type=int, help="Only runs of this tuning session.")
@click.option("--status", type=click.Choice(STATUSES),
              help="Only runs with this outcome (T4 vocabulary).")
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
@json_option
@click.pass_obj
def runs(obj: Context, kernel: str | None, tuning_id: int | None, status: str | None,
         limit: int, as_json: bool) -> None:
    """List stored measurements (every candidate, valid or not), newest first."""
    with obj.open_store() as store:
        rows = store.runs(kernel=kernel, tuning_id=tuning_id, status=status, limit=limit)
    columns = ["id", "tuning_id", "kernel", "shape", "config", "status", "median_s", "phase", "reason"]
    if as_json:
        for row in rows:
            row["samples"] = json.loads(row["samples"] or "[]")
    emit(rows, as_json, title="Runs", columns=columns)


@click.command()
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
    emit(rows, as_json, title="Workload presets")

