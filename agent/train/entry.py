"""``edgetune train`` and ``edgetune eval`` as library calls: which datasets, which extras, then the pipeline.

Light on purpose: the training modules (PyTorch, llama.cpp, LightGBM) are imported only
after :func:`require_training_modules` has said which of them are missing.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

__all__ = ["DEFAULT_DATASETS", "TRAINING_MODULES", "evaluate_models", "require_training_modules", "train",
           "training_datasets"]

DEFAULT_DATASETS = ("models/data/cpu-epyc-avx512-2026-11-25", "models/data/gpu-kernel-tuner-hub")
TRAINING_MODULES = ("torch", "gguf", "llama_cpp", "lightgbm", "onnxmltools")

Log = Callable[[str], None]


def training_datasets(paths: Sequence[str | Path]) -> list[str]:
    """The dataset folders given, else the committed ones that are here; ConfigError if none."""
    chosen = [str(p) for p in paths] or [d for d in DEFAULT_DATASETS if Path(d).is_dir()]
    if not chosen:
        raise ConfigError("no dataset given and none of the default ones is here "
                          f"({', '.join(DEFAULT_DATASETS)}); pass dataset folders")
    return chosen


def require_training_modules() -> None:
    """ConfigError naming the training extra's modules that are not installed."""
    missing = [m for m in TRAINING_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"training needs {', '.join(missing)}: pip install 'edgetune[train]'")


def train(*, datasets: Sequence[str | Path] = (), out_dir: Path, teacher_steps: int | None = None,
          student_steps: int | None = None, seed: int = 0, card: bool = True, smoke: bool = False,
          threads: int | None = None, only: str = "all", from_fleet: str | None = None, fleet_token: str = "",
          on_pull: Callable[[str, Path, Mapping[str, Any]], None] | None = None,
          log: Log = print) -> dict[str, Any]:
    """Train the models on ``datasets`` into ``out_dir``; returns the metrics (``only="cost-model"`` or
    ``"reuse"``: that file's entry).

    ``from_fleet`` adds the fleet's runs, pulled into a scratch dataset first (``on_pull(url, folder,
    manifest)`` is told of it).
    """
    require_training_modules()
    if from_fleet:
        from agent.fleet.pull import pull_dataset

        with tempfile.TemporaryDirectory(prefix="edgetune-fleet-") as scratch:
            pulled = Path(scratch) / "fleet"
            manifest = pull_dataset(from_fleet, fleet_token, pulled)
            if on_pull is not None:
                on_pull(from_fleet, pulled, manifest)
            return train(datasets=(*datasets, pulled), out_dir=out_dir, teacher_steps=teacher_steps,
                         student_steps=student_steps, seed=seed, card=card, smoke=smoke, threads=threads,
                         only=only, log=log)
    from agent.train.card import write_card
    from agent.train.fit import TrainRun
    from agent.train.pipeline import train_and_export, train_cost_model, write_reuse_index

    if only in ("cost-model", "reuse"):
        if only == "cost-model":
            entry = train_cost_model(training_datasets(datasets), out_dir, seed=seed, log=log)
        else:
            entry = write_reuse_index(training_datasets(datasets), out_dir, log=log)
        if card and (out_dir / "edgetune-student-q4_0.gguf").is_file():
            write_card(out_dir)
        return entry
    run = (TrainRun().tiny(5) if smoke else TrainRun()).seeded(seed)
    if teacher_steps:
        run = replace(run, teacher_train=replace(run.teacher_train, steps=teacher_steps))
    if student_steps:
        run = replace(run, student_train=replace(run.student_train, steps=student_steps))
    metrics = train_and_export(training_datasets(datasets), out_dir, run, log=log, threads=threads)
    if card:
        write_card(out_dir)
    return metrics


def evaluate_models(*, datasets: Sequence[str | Path] = (), out_dir: Path, folds: Sequence[str] = (),
                    quick: bool = False, opentuner: bool = True, quantized: bool = True, jobs: int = 1,
                    fresh: bool = False, log: Log = print) -> dict[str, Any]:
    """Evaluate on held-out folds into ``out_dir``; returns the report.

    When ``out_dir`` sits in a trained models folder (``models/eval``), refresh its model card,
    and after a full run (not ``quick``, every fold) install the calibration as its ``confidence.json``
    and the policy as its ``policy.json``.
    """
    require_training_modules()
    from agent.train.card import write_card
    from agent.train.evaluate import EvalOptions, evaluate

    options = EvalOptions(folds=tuple(folds), opentuner=opentuner and not quick, quantized=quantized)
    if quick:
        options = replace(options, run=options.run.tiny(20), max_cases=3)
    report = evaluate(training_datasets(datasets), out_dir, options, log=log, jobs=jobs, fresh=fresh)
    if (out_dir.parent / "metrics.json").is_file():
        calibration, policy = out_dir / "calibration.json", out_dir / "policy.json"
        if calibration.is_file() and not quick and not folds:
            shutil.copyfile(calibration, out_dir.parent / "confidence.json")
            if policy.is_file():
                shutil.copyfile(policy, out_dir.parent / "policy.json")
        write_card(out_dir.parent)
    return report
