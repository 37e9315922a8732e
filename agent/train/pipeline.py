"""``edgetune train``: from committed datasets to the shipped model files, with a fixed seed.

Writes into ``out_dir`` (``models/`` in the repository):

- ``edgetune-student-q4_0.gguf``: the on-device model (llama.cpp's Q4_0);
- ``edgetune-teacher-q8_0.gguf``: the larger model for the fleet's ranking endpoint;
- ``edgetune-cost.onnx``: the cost model (LightGBM trees in ONNX) that re-ranks and checks the student;
- ``vocab.json``: the vocabulary (version, digest, tokens), for tools that read the model;
- ``metrics.json``: sizes, training curves, agreement between teacher, student and Q4;
- ``README.md``: the model card (data, splits, sizes, metrics, limits).

The unquantised files are written to a temporary folder only: they are large and
``edgetune train`` makes them again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.predict.model_files import COST_MODEL_FILE, STUDENT_FILE, TEACHER_FILE
from agent.predict.model_files import write_json as _write_json
from agent.predict.vocab import vocabulary
from agent.train.baselines import order_metrics
from agent.train.cases import Case, load_cases
from agent.train.cost_model import export_onnx, fit_cost_model
from agent.train.fit import TrainRun, score_case, slot_allowed, train_model
from agent.train.gguf_export import quantize_gguf, write_gguf
from agent.train.model import Decoder

__all__ = ["STUDENT_FILE", "TEACHER_FILE", "train_and_export", "train_cost_model", "write_reuse_index"]

AGREEMENT_CASES = 24


def _params(model: Decoder) -> int:
    """Parameters as exported (plain token tables, not the training factorisation)."""
    blocks = sum(p.numel() for p in model.blocks.parameters())
    return blocks + 2 * model.cfg.vocab_size * model.cfg.dim + model.cfg.dim


def _top(scores: np.ndarray, k: int) -> set[int]:
    return {int(i) for i in np.argsort(-scores, kind="stable")[:k]}


def _agreement(reference: list[np.ndarray], other: list[np.ndarray]) -> dict[str, float]:
    """How far ``other``'s rankings follow ``reference``'s: top-1 match, top-5 overlap, rank correlation."""
    top1, top5, rho = [], [], []
    for a, b in zip(reference, other, strict=False):
        top1.append(float(int(np.argmax(a)) in _top(b, 1)))
        top5.append(len(_top(a, 5) & _top(b, 5)) / 5)
        ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
        rho.append(float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 else 1.0)
    return {"top1_match": float(np.mean(top1)), "top5_overlap": float(np.mean(top5)),
            "spearman": float(np.mean(rho)), "cases": len(reference)}


def _in_sample(model_scores: list[np.ndarray], cases: Sequence[Case]) -> dict[str, float]:
    ratios: dict[int, list[float]] = {1: [], 5: []}
    for scores, case in zip(model_scores, cases, strict=True):
        found = order_metrics(case, [int(i) for i in np.argsort(-scores, kind="stable")], ks=tuple(ratios))
        for k, values in ratios.items():
            values.append(max(found["best_of_k"][k], 1e-9))
    return {f"best_of_{k}": float(np.exp(np.mean(np.log(v)))) for k, v in ratios.items()}


def train_and_export(datasets: Sequence[str], out_dir: str | Path, run: TrainRun,
                     log: Callable[[str], None] = print, *, threads: int | None = None) -> dict[str, Any]:
    """Train teacher and student on every case of ``datasets``; write the model files and metrics."""
    from agent.predict.local_model import LocalModel

    # Results do not depend on the thread count beyond float rounding; a busy machine
    # wants fewer threads (OpenMP threads spin while they wait for a core).
    torch.set_num_threads(threads or max(1, min(os.cpu_count() or 1, 8)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cases = load_cases(datasets)
    log(f"{len(cases)} cases from {len(datasets)} dataset(s)")
    curves: dict[str, list[str]] = {"teacher": [], "student": []}

    def logger(name: str) -> Callable[[str], None]:
        def emit(line: str) -> None:
            curves[name].append(line)
            log(f"{name}: {line}")
        return emit

    t0 = time.monotonic()
    teacher = train_model(cases, run.teacher, run.teacher_train, log=logger("teacher"))
    teacher_s = time.monotonic() - t0
    t0 = time.monotonic()
    student = train_model(cases, run.student, run.student_train, teacher=teacher, log=logger("student"))
    student_s = time.monotonic() - t0
    vocab = vocabulary()
    # Agreement is measured on a fixed spread of cases (every n-th), on small tables.
    sample = [c for c in cases if len(c.configs) <= 2048]
    sample = sample[:: max(1, len(sample) // AGREEMENT_CASES)][:AGREEMENT_CASES]
    teacher_scores = [score_case(teacher, c) for c in sample]
    student_scores = [score_case(student, c) for c in sample]
    with tempfile.TemporaryDirectory(prefix="edgetune-train-") as tmp:
        meta = {"datasets": ",".join(Path(d).name for d in datasets), "seed": run.student_train.seed}
        student_f32 = write_gguf(student, vocab, Path(tmp) / "student-f32.gguf", name="edgetune-student",
                                 metadata={**meta, "role": "student"})
        teacher_f32 = write_gguf(teacher, vocab, Path(tmp) / "teacher-f32.gguf", name="edgetune-teacher",
                                 metadata={**meta, "role": "teacher"})
        quantize_gguf(student_f32, out / STUDENT_FILE, kind="q4_0")
        quantize_gguf(teacher_f32, out / TEACHER_FILE, kind="q8_0")
        f32 = LocalModel(student_f32)
        f32_scores = [f32.score(c.prompt(), c.tokens, slot_allowed(c)) for c in sample]
        f32.close()
        f32_mb = student_f32.stat().st_size / 2**20
    q4 = LocalModel(out / STUDENT_FILE)
    q4_scores = [q4.score(c.prompt(), c.tokens, slot_allowed(c)) for c in sample]
    q4.close()
    torch_vs_gguf = max(float(np.max(np.abs(a - b))) for a, b in zip(student_scores, f32_scores, strict=False))
    metrics = {
        "datasets": [str(d) for d in datasets],
        "cases": len(cases), "cases_cpu": sum(c.kind == "cpu" for c in cases),
        "cases_gpu": sum(c.kind == "gpu" for c in cases), "rows": int(sum(len(c.configs) for c in cases)),
        "vocabulary": {"version": vocab.version, "size": vocab.size, "digest": vocab.digest()},
        "teacher": {"config": asdict(teacher.cfg), "parameters": _params(teacher), "train_s": round(teacher_s, 1),
                    "options": asdict(run.teacher_train), "curve": curves["teacher"],
                    "file": TEACHER_FILE, "file_mb": round((out / TEACHER_FILE).stat().st_size / 2**20, 2)},
        "student": {"config": asdict(student.cfg), "parameters": _params(student), "train_s": round(student_s, 1),
                    "options": asdict(run.student_train), "curve": curves["student"],
                    "file": STUDENT_FILE, "file_mb": round((out / STUDENT_FILE).stat().st_size / 2**20, 2),
                    "f32_mb": round(f32_mb, 2)},
        "in_sample": {"note": "cases the models were trained on: a fit check, not a result",
                      "teacher": _in_sample(teacher_scores, sample), "student": _in_sample(student_scores, sample),
                      "student_q4": _in_sample(q4_scores, sample)},
        "agreement": {"student_vs_teacher": _agreement(teacher_scores, student_scores),
                      "q4_vs_f32": _agreement(f32_scores, q4_scores),
                      "gguf_f32_vs_torch_max_abs_logp": torch_vs_gguf},
        "wall_s": round(time.monotonic() - started, 1),
    }
    _write_json(out / "vocab.json", {"version": vocab.version, "digest": vocab.digest(), "tokens": list(vocab.tokens)})
    _write_json(out / "metrics.json", metrics)
    train_cost_model(datasets, out, seed=run.student_train.seed, log=log, cases=cases)
    write_reuse_index(datasets, out, log=log, cases=cases)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    log(f"wrote {out / STUDENT_FILE} ({metrics['student']['file_mb']} MB) and {out / TEACHER_FILE} "
        f"({metrics['teacher']['file_mb']} MB) in {metrics['wall_s']:.0f} s")
    return metrics


def _merge_metrics(out: Path, key: str, entry: dict[str, Any]) -> None:
    """Set ``metrics.json``'s ``key`` to ``entry``, keeping the rest of the file."""
    path = out / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    metrics[key] = entry
    _write_json(path, metrics)


def train_cost_model(datasets: Sequence[str], out_dir: str | Path, *, seed: int = 0,
                     log: Callable[[str], None] = print, cases: Sequence[Case] | None = None) -> dict[str, Any]:
    """Train the cost model on every case, write ``edgetune-cost.onnx`` and its entry in ``metrics.json``."""
    from agent.predict.cost_features import config_features
    from agent.predict.cost_model import CostModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cases = list(cases) if cases is not None else load_cases(datasets)
    model = fit_cost_model(cases, seed=seed)
    path = export_onnx(model, out / COST_MODEL_FILE, metadata={"datasets": ",".join(Path(d).name for d in datasets),
                                                               "seed": str(seed)})
    onnx_model = CostModel(path)
    # The ONNX file must give LightGBM's predictions (float32 thresholds: tiny differences only).
    sample = cases[:: max(1, len(cases) // AGREEMENT_CASES)][:AGREEMENT_CASES]
    worst = 0.0
    for case in sample:
        x = config_features(case.hardware, case.kernel_info, case.shape, case.codec, case.configs)
        worst = max(worst, float(np.max(np.abs(onnx_model.predict(x) - model.predict(x.astype(np.float32))))))
    entry = {"file": COST_MODEL_FILE, "file_kb": round(path.stat().st_size / 1024, 1), "cases": len(cases),
             "trees": int(model.n_estimators), "seed": seed, "onnx_vs_lightgbm_max_abs": worst,
             "train_s": round(time.monotonic() - started, 1)}
    _merge_metrics(out, "cost_model", entry)
    log(f"wrote {path} ({entry['file_kb']} KB, {entry['trees']} trees) in {entry['train_s']:.0f} s")
    return entry


def write_reuse_index(datasets: Sequence[str], out_dir: str | Path, *, log: Callable[[str], None] = print,
                      cases: Sequence[Case] | None = None) -> dict[str, Any]:
    """Write ``reuse.json.gz``: every case's fastest configurations, the device's reuse prior and the
    policy's test of which situation a prediction is in; its entry goes in ``metrics.json``."""
    from agent.predict.model_files import REUSE_FILE
    from agent.predict.reuse import ReuseIndex
    from agent.train.baselines import measured_case

    out = Path(out_dir)
    cases = list(cases) if cases is not None else load_cases(datasets)
    index = ReuseIndex([measured_case(c) for c in cases])
    index.save(out / REUSE_FILE)
    entry = {"file": REUSE_FILE, "cases": len(index.cases), "kernels": sorted(index.kernels),
             "file_kb": round((out / REUSE_FILE).stat().st_size / 1024, 1)}
    _merge_metrics(out, "reuse", entry)
    log(f"wrote {out / REUSE_FILE} ({entry['cases']} cases, {entry['file_kb']} KB)")
    return entry
