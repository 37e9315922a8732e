"""Import tuning data from files into the store, and export stored runs as files.

Formats: Kernel Tuner caches (``.json``/``.json.gz``), T4 results, and edgetune's own
dataset folders (from another machine). ``import_path`` detects which one a path is.
Each file is checked completely before anything from it is stored, and is stored in
one session: a bad file changes nothing, and the files after it still import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.dataset import MANIFEST_FILE, DatasetError, read_dataset
from agent.interchange.batch import ImportBatch, ImportedRun, ImportFileError, store_batch
from agent.interchange.kerneltuner import load_json_file, looks_like_kernel_tuner, read_kernel_tuner
from agent.interchange.t4 import looks_like_t4, read_t4
from agent.store import Store

__all__ = ["ImportFileError", "ImportOutcome", "expand_paths", "import_path", "import_paths", "read_batches"]

FORMATS = ("auto", "kernel-tuner", "t4", "dataset")


@dataclass(frozen=True)
class ImportOutcome:
    path: Path
    kernel: str
    device: str
    state: str  # imported | already imported
    runs: int


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; a directory that is not a dataset stands for its *.json(.gz) files, recursively."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir() and not (path / MANIFEST_FILE).is_file():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".json", ".json.gz"))))
        else:
            found.append(path)
    return found


def read_batches(path: Path, *, fmt: str = "auto", device: str | None = None, kernel: str | None = None,
                 shape: Mapping[str, int] | None = None, origin_root: Path | None = None) -> list[ImportBatch]:
    """Parse one path into batches without touching the store (ImportFileError on any problem)."""
    if fmt not in FORMATS:
        raise ImportFileError(f"unknown import format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not path.exists():
        raise ImportFileError(f"{path}: no such file or directory")
    if fmt == "dataset" or (fmt == "auto" and path.is_dir()):
        return _dataset_batches(path)
    data = load_json_file(path)
    if fmt == "kernel-tuner" or (fmt == "auto" and looks_like_kernel_tuner(data)):
        return [read_kernel_tuner(path, data, device=device, kernel=kernel, origin_root=origin_root)]
    if fmt == "t4" or (fmt == "auto" and looks_like_t4(data)):
        return [read_t4(path, data, device=device, kernel=kernel, shape=shape)]
    raise ImportFileError(f"{path}: neither a Kernel Tuner cache (cache, tune_params_keys) nor a T4 file "
                       "(schema_version, results) nor a dataset folder")


def import_path(store: Store, path: Path, *, replace_existing: bool = False, **options: object) -> list[ImportOutcome]:
    """Parse ``path`` completely, then store each of its batches."""
    batches = read_batches(path, **options)  # type: ignore[arg-type]
    outcomes = []
    for batch in batches:
        state, count = store_batch(store, batch, replace_existing=replace_existing)
        outcomes.append(ImportOutcome(path=path, kernel=batch.kernel,
                                      device=str(batch.device_profile.get("name", batch.device)),
                                      state=state, runs=count))
    return outcomes


def import_paths(store: Store, paths: Sequence[Path], *, fmt: str = "auto", device: str | None = None,
                 kernel: str | None = None, shape: Mapping[str, int] | None = None, replace_existing: bool = False,
                 on_error: Callable[[ImportFileError], None] | None = None) -> tuple[list[ImportOutcome], list[str]]:
    """Import every file ``paths`` stand for (see :func:`expand_paths`): (outcomes, errors).

    A file that cannot be imported changes nothing and the rest go on (``on_error`` is told
    of it); when the paths stand for one file only, its error is raised instead.
    """
    outcomes: list[ImportOutcome] = []
    errors: list[str] = []
    files = expand_paths(list(paths))
    for path in files:
        root = path.parent.parent if path.is_file() else path
        try:
            outcomes.extend(import_path(store, path, fmt=fmt, device=device, kernel=kernel, shape=shape,
                                        origin_root=root, replace_existing=replace_existing))
        except ImportFileError as exc:
            if len(files) == 1:
                raise
            errors.append(str(exc))
            if on_error is not None:
                on_error(exc)
    return outcomes, errors


def _dataset_batches(path: Path) -> list[ImportBatch]:
    try:
        dataset = read_dataset(path)
    except DatasetError as exc:
        raise ImportFileError(str(exc)) from None
    name = str(dataset.manifest.get("name", path.name))
    devices = dataset.manifest.get("devices", {})
    kernels = dataset.manifest.get("kernels", {})
    batches = []
    for records in dataset.cases().values():
        first = records[0]
        space = kernels.get(first["kernel_key"], {}).get("space", {})
        batches.append(ImportBatch(
            origin=f"dataset:{name}:{first['origin']}", device=first["device"],
            device_profile=devices.get(first["device"], {}), kernel=first["kernel"],
            params=space.get("params", []), shape=first["shape"], target=first["target"],
            cores=first["cores"], kernel_key=first["kernel_key"],
            runs=[ImportedRun(config=r["config"], status=r["status"], time_s=r["time_s"],
                              samples=tuple(r.get("samples") or ())) for r in records],
        ))
    return batches
