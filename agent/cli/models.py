"""Model commands: train the models, evaluate them on held-out splits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from agent.cli.fleet import pull_and_report
from agent.cli.options import json_option
from agent.cli.output import print_pull
from agent.cli.root import Context

__all__ = ["eval_", "train"]


@click.command()
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
@click.option("--only", type=click.Choice(["all", "cost-model", "reuse"]), default="all", show_default=True,
              help="cost-model: train only the ONNX cost model (seconds); reuse: write only the measured "
                   "rankings reuse.json.gz (seconds); both keep the GGUF files.")
@click.option("--from-fleet", "from_fleet", metavar="URL",
              help="Also train on the fleet's measurements (operator token from EDGETUNE_FLEET_OPERATOR_TOKEN).")
@click.option("--pull-only", "pull_only", metavar="DIR", type=click.Path(path_type=Path),
              help="With --from-fleet: write the fleet's dataset to DIR and train nothing.")
@json_option
@click.pass_obj
def train(obj: Context, datasets: tuple[Path, ...], out_dir: Path, teacher_steps: int | None, student_steps: int | None,
          seed: int, card: bool, smoke: bool, threads: int | None, only: str, from_fleet: str | None,
          pull_only: Path | None, as_json: bool) -> None:
    """Train the teacher, the distilled 4-bit student and the cost model on DATASETS (default: models/data/*).

    Same datasets and seed, same models. Writes edgetune-student-q4_0.gguf,
    edgetune-teacher-q8_0.gguf, edgetune-cost.onnx, reuse.json.gz (the measured rankings the
    device reuses where the evaluation says so), vocab.json, metrics.json and the model
    card README.md. A few minutes per model on two cores. --from-fleet URL pulls the fleet's
    runs into a dataset first (kept only with --pull-only DIR, which trains nothing).
    """
    from agent.train.entry import train as train_models

    token = obj.settings.fleet_operator_token or ""
    if pull_only is not None and not from_fleet:
        raise click.UsageError("--pull-only needs --from-fleet URL")
    if from_fleet and pull_only is not None:
        pull_and_report(from_fleet, pull_only, token=token, as_json=as_json)
        return

    def on_pull(url: str, folder: Path, manifest: Mapping[str, Any]) -> None:
        if not as_json:  # a log line on stderr (stdout is the training's)
            print_pull(url, folder, manifest, as_json=False, err=True)

    log = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    result = train_models(datasets=datasets, out_dir=out_dir, teacher_steps=teacher_steps, student_steps=student_steps,
                          seed=seed, card=card, smoke=smoke, threads=threads, only=only, from_fleet=from_fleet,
                          fleet_token=token, on_pull=on_pull, log=log)
    if as_json:
        click.echo(json.dumps(result, indent=1))


@click.command("eval")
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
    from agent.train.entry import evaluate_models

    log = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    report = evaluate_models(datasets=datasets, out_dir=out_dir, folds=folds, quick=quick, opentuner=not no_opentuner,
                             quantized=not no_q4, jobs=jobs, fresh=fresh, log=log)
    if as_json:
        click.echo(json.dumps(report["splits"], indent=1))
    else:
        click.echo((out_dir / "report.md").read_text(encoding="utf-8"), nl=False)
