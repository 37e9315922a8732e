"""The committed datasets that training reads: intact, and covering what they promise."""

from collections import defaultdict
from pathlib import Path

from agent.dataset import read_dataset
from agent.kernels.registry import kernel_dirs

DATA = Path(__file__).resolve().parents[2] / "models" / "data"


def test_the_cpu_dataset_covers_every_builtin_kernel_at_4_shapes_3_targets_and_2_core_counts():
    [folder] = sorted(DATA.glob("cpu-*"))
    dataset = read_dataset(folder)  # checks the SHA-256 and every record
    cover = defaultdict(lambda: (set(), set(), set()))
    for record in dataset.records:
        shapes, targets, cores = cover[record["kernel"]]
        shapes.add(tuple(sorted(record["shape"].items())))
        targets.add(record["target"])
        cores.add(record["cores"])
    assert set(cover) == set(kernel_dirs())
    for kernel, (shapes, targets, cores) in cover.items():
        assert len(shapes) >= 4 and len(targets) >= 3 and cores == {1, 2}, kernel
    assert dataset.manifest["devices"] and dataset.manifest["commands"]


def test_the_gpu_dataset_holds_all_13_public_files():
    dataset = read_dataset(DATA / "gpu-kernel-tuner-hub")
    assert len(dataset.cases()) == 13
    assert dataset.manifest["counts"]["records"] == 118_184
    assert all(p.get("kind") == "gpu" for p in dataset.manifest["devices"].values())
    assert (DATA / "gpu-kernel-tuner-hub" / "LICENSE").is_file()
