"""The reuse prior, the policy that picks a source per situation, and diversified picks.

Unit tests on small hand-made data, then the shipped files through the real predictor (the
student on llama.cpp, the ONNX cost model): the situation a device is in decides what it tries.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import shutil

import numpy as np
import pytest

from agent.errors import ModelFileError
from agent.kernels.problem import parse_shape
from agent.kernels.registry import find_kernel
from agent.kernels.space import Space, config_key
from agent.kernels.spec import load_spec
from agent.predict.policy import POLICY_FILE, SITUATIONS, Policy, situation_of
from agent.predict.predictor import Predictor
from agent.predict.prompt import HardwareDesc
from agent.predict.ranking import diversified_order
from agent.predict.reuse import (
    REUSE_FILE,
    UNKNOWN_FIELD,
    MeasuredCase,
    ReuseIndex,
    hardware_distance,
    reuse_ranking,
    same_hardware,
)
from agent.train import baselines
from tests.conftest import ROOT
from tests.helpers import make_case

MODELS = ROOT / "models"
CPU = HardwareDesc(kind="cpu", isa="x86_64", vector_bits=256, cores=4, l1_bytes=32768, l2_bytes=1 << 20,
                   l3_bytes=1 << 25)
GPU = HardwareDesc(kind="gpu", vendor="NVIDIA", architecture="ampere", multiprocessors=84, l2_bytes=6 << 20,
                   bandwidth_gbs=936.0, shared_memory_bytes=49152)


def known(source: str, hardware: HardwareDesc, best: int, *, kernel: str = "gemm",
          shape: dict[str, int] | None = None) -> MeasuredCase:
    """A known case whose measured ranking starts at TILE=best."""
    ranked = tuple({"TILE": t} for t in sorted((4, 8, 16, 32, 64), key=lambda t: abs(math.log2(t / best))))
    return MeasuredCase(kernel=kernel, shape=shape or {"M": 64}, hardware=hardware, ranked=ranked, source=source)


# -- distances ------------------------------------------------------------------------------------
def test_hardware_distance_is_zero_for_the_same_device_and_grows_with_each_difference() -> None:
    assert hardware_distance(CPU, CPU) == 0.0
    bigger_l2 = dataclasses.replace(CPU, l2_bytes=CPU.l2_bytes * 4)
    half_cores = dataclasses.replace(CPU, cores=2)
    both = dataclasses.replace(bigger_l2, cores=2)
    assert 0 < hardware_distance(CPU, half_cores) < hardware_distance(CPU, bigger_l2) < hardware_distance(CPU, both)
    assert hardware_distance(CPU, bigger_l2) == hardware_distance(bigger_l2, CPU)
    assert hardware_distance(CPU, GPU) == math.inf


def test_a_field_only_one_side_knows_counts_as_unknown_not_as_equal() -> None:
    measured = dataclasses.replace(CPU, bandwidth_gbs=20.0)
    fields = 7  # isa, vector_bits, cores, l1, l2, l3 and the bandwidth one side knows
    assert hardware_distance(CPU, measured) == pytest.approx(UNKNOWN_FIELD / fields)
    # ... but a bandwidth the shipped data lacks does not make the same machine another kind of device.
    assert same_hardware(CPU, measured)
    assert not same_hardware(CPU, dataclasses.replace(CPU, vector_bits=512))
    assert not same_hardware(dataclasses.replace(measured, bandwidth_gbs=40.0), measured)
    assert not same_hardware(HardwareDesc(kind="cpu"), HardwareDesc(kind="cpu"))  # nothing known: no evidence


# -- the reuse ranking ----------------------------------------------------------------------------
def test_reuse_takes_the_nearest_devices_ranking_first_and_only_what_is_legal_here() -> None:
    near = known("near", dataclasses.replace(CPU, l2_bytes=2 << 20), best=32)
    far = known("far", dataclasses.replace(CPU, cores=64, l3_bytes=1 << 28), best=4)
    other_kernel = known("softmax", CPU, best=8, kernel="softmax")
    found = reuse_ranking([far, other_kernel, near], "gemm", CPU, {"M": 64}, limit=3)
    assert [c["TILE"] for c, _ in found] == [32, 16, 64] and {k.source for _, k in found} == {"near"}
    legal = reuse_ranking([far, near], "gemm", CPU, {"M": 64}, valid=lambda c: c["TILE"] <= 16, limit=10)
    assert [c["TILE"] for c, _ in legal] == [16, 8, 4]  # the near ranking, then nothing new from the far one
    assert reuse_ranking([near], "conv2d", CPU, {"M": 64}) == []


def test_reuse_order_replays_the_same_prior_on_a_measured_table() -> None:
    target = make_case("target", shift=1)  # best TILE is 32
    neighbour, stranger = make_case("n", shift=1, cores=8), make_case("s", shift=0, cores=64)
    order = baselines.reuse_order(target, [stranger, neighbour, target], 5)
    assert target.configs[order[0]]["TILE"] == 32  # the nearest device's best, never the case's own table
    assert len(set(order)) == 5
    alone = baselines.reuse_order(target, [target], 5)  # nothing known: default first, then random rows
    assert target.configs[alone[0]] == {p["name"]: p["default"] for p in target.params}


def test_the_reuse_index_round_trips_and_a_damaged_file_is_one_line(tmp_path) -> None:
    index = ReuseIndex([known("a", CPU, best=16), known("b", GPU, best=8, kernel="conv")])
    index.save(tmp_path / REUSE_FILE)
    again = ReuseIndex.load(tmp_path / REUSE_FILE)
    assert again.cases == sorted(index.cases, key=lambda c: c.source) and again.kernels == {"gemm", "conv"}
    index.save(tmp_path / "second.json.gz")
    assert (tmp_path / "second.json.gz").read_bytes() == (tmp_path / REUSE_FILE).read_bytes()  # reproducible
    (tmp_path / "bad.json.gz").write_bytes(gzip.compress(b'{"cases": [{"kernel": 1}]}'))
    with pytest.raises(ModelFileError, match="bad.json.gz: not a reuse index"):
        ReuseIndex.load(tmp_path / "bad.json.gz")
    (tmp_path / "trunc.json.gz").write_bytes((tmp_path / REUSE_FILE).read_bytes()[:40])
    with pytest.raises(ModelFileError, match="trunc.json.gz"):
        ReuseIndex.load(tmp_path / "trunc.json.gz")


# -- the policy -----------------------------------------------------------------------------------
def test_the_policy_picks_per_situation_the_source_that_scored_best_on_its_splits() -> None:
    results = {
        "shape": {"model": [0.9, 0.95], "reuse": [1.0, 0.99], "random": [0.7, 0.7]},
        "gpu": {"model": [0.9], "reuse": [0.85], "random": [0.6]},
        "simd": {"model": [0.9, 0.9], "reuse": [0.95, 0.95], "random": [0.6, 0.6]},
        "kernel": {"model": [0.6, 0.7], "reuse": [0.5, 0.5], "cost-model": [0.8, 0.8], "random": [0.75, 0.75]},
    }
    policy = Policy.choose(results)
    assert policy.choices == {"seen": "reuse", "unseen-device": "reuse", "unseen-kernel": "cost-model"}
    # gpu has no cost-model rows, so it is no candidate for unseen-device (pooled over gpu and simd).
    assert "cost-model" not in policy.evidence["unseen-device"]["best_of_5"]
    assert policy.evidence["unseen-device"]["cases"] == 3
    assert policy.good_share("seen", "reuse") == 1.0 and policy.good_share("seen", "model") == 0.5
    tie = Policy.choose({"shape": {"model": [0.9], "reuse": [0.9], "random": [0.5]}})
    assert tie.source("seen") == "model"  # a tie keeps the model
    assert Policy.choose({}).choices == Policy.model_everywhere().choices


def test_a_policy_file_with_an_unknown_source_is_refused_by_name(tmp_path) -> None:
    Policy.choose({"shape": {"model": [0.9], "reuse": [1.0], "random": [0.5]}}).save(tmp_path / POLICY_FILE)
    assert Policy.load(tmp_path / POLICY_FILE).source("seen") == "reuse"
    (tmp_path / "odd.json").write_text('{"choices": {"seen": "oracle"}}', encoding="utf-8")
    with pytest.raises(ModelFileError, match="unknown situation or source oracle"):
        Policy.load(tmp_path / "odd.json")
    (tmp_path / "junk.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(ModelFileError, match="junk.json: not a valid policy file"):
        Policy.load(tmp_path / "junk.json")


def test_the_situation_comes_from_what_was_measured() -> None:
    index = ReuseIndex([known("a", CPU, best=16)])
    assert situation_of(index, "gemm", CPU) == "seen"
    assert situation_of(index, "gemm", dataclasses.replace(CPU, vector_bits=128)) == "unseen-device"
    assert situation_of(index, "my_kernel", CPU) == "unseen-kernel"
    assert situation_of(None, "gemm", CPU) == "unknown"
    assert set(SITUATIONS) == {"seen", "unseen-device", "unseen-kernel"}


# -- diversified picks ----------------------------------------------------------------------------
def test_diversified_picks_are_not_near_copies_of_the_best() -> None:
    # Rows 0-3 differ in one slot of four and score best; row 4 differs everywhere and scores a little lower.
    tokens = np.array([[1, 1, 1, 1], [1, 1, 1, 2], [1, 1, 1, 3], [1, 1, 1, 4], [5, 6, 7, 8], [1, 1, 2, 1]])
    scores = np.array([1.0, 0.99, 0.98, 0.97, 0.9, 0.1])
    order = diversified_order(scores, tokens, k=2)
    assert order[:2] == [0, 4] and sorted(order) == list(range(6))
    assert diversified_order(scores, tokens, k=1) == list(np.argsort(-scores, kind="stable"))


# -- the shipped files, through the predictor ----------------------------------------------------
def training_profile() -> tuple[dict, str]:
    """The profile of the machine the shipped CPU data was measured on, and a shape it measured gemm at."""
    index = ReuseIndex.load(MODELS / REUSE_FILE)
    case = next(c for c in index.cases if c.kernel == "gemm" and c.hardware.kind == "cpu"
                and c.hardware.vector_bits == 512 and c.hardware.cores == 2)
    hw = case.hardware
    profile = {"arch": hw.isa, "vector_bits": hw.vector_bits, "physical_cores": hw.cores, "logical_cores": hw.cores,
               "l1d_bytes": hw.l1_bytes, "l2_bytes": hw.l2_bytes, "l3_bytes": hw.l3_bytes, "simd_flags": ["avx512f"]}
    return profile, ",".join(f"{k}={v}" for k, v in sorted(case.shape.items()))


def space_for(kernel: str, shape: str | None, profile: dict) -> Space:
    problem = parse_shape(find_kernel(kernel), shape)
    return Space.build(problem, max_threads=profile["logical_cores"], vector_bits=profile["vector_bits"])


@pytest.fixture(scope="module")
def predictor():
    with Predictor(MODELS) as loaded:
        yield loaded


def test_the_shipped_policy_and_index_load_and_cover_every_builtin_kernel(predictor) -> None:
    assert predictor.reuse is not None and not [w for w in predictor.warnings if "policy" in w or "reuse" in w]
    assert {"gemm", "conv2d", "softmax", "layernorm"} <= predictor.reuse.kernels
    assert set(predictor.policy.choices) == set(SITUATIONS)


def test_a_device_like_the_measured_one_tries_its_measured_best_first(predictor) -> None:
    profile, shape = training_profile()
    space = space_for("gemm", shape, profile)
    prediction = predictor.predict(space, profile)
    assert prediction.situation == "seen"
    source = predictor.policy.source("seen")
    assert prediction.source == source
    if source == "reuse":
        index = predictor.reuse
        measured = next(c for c in index.cases if c.kernel == "gemm" and same_hardware(c.hardware, space_hw(profile))
                        and ",".join(f"{k}={v}" for k, v in sorted(c.shape.items())) == shape)
        legal = [c for c in measured.ranked if space.is_valid(c)]
        assert prediction.candidates[0].config == legal[0] and prediction.candidates[0].source == "reuse"
        assert prediction.candidates[0].logp is None
    # The confidence is the held-out share of good cases of this source in this situation.
    assert prediction.confidence == predictor.policy.good_share("seen", source) is not None
    assert any(c.source == "local" for c in prediction.candidates)  # the student's picks follow
    assert len({config_key(c.config) for c in prediction.candidates}) == len(prediction.candidates)
    assert all(space.is_valid(c.config) for c in prediction.candidates)


def space_hw(profile: dict) -> HardwareDesc:
    from agent.predict.prompt import hardware_desc

    return hardware_desc(profile, vector_bits=profile["vector_bits"])


def test_another_compile_target_is_an_unseen_device_and_a_new_kernel_an_unseen_kernel(predictor, tmp_path) -> None:
    profile, shape = training_profile()
    narrow = {**profile, "vector_bits": 64}  # no such target in the data
    prediction = predictor.predict(space_for("gemm", shape, narrow), narrow)
    assert prediction.situation == "unseen-device" and prediction.source == predictor.policy.source("unseen-device")
    # A user's kernel: the built-in gemm under another name, which nothing measured.
    folder = tmp_path / "kernels" / "my_gemm"
    shutil.copytree(ROOT / "agent" / "kernels" / "builtin" / "gemm", folder)
    toml = folder / "kernel.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('name = "gemm"', 'name = "my_gemm"', 1), encoding="utf-8")
    spec = load_spec(toml)
    space = Space.build(parse_shape(spec, None), max_threads=2, vector_bits=512)
    prediction = predictor.predict(space, profile)
    assert prediction.situation == "unseen-kernel"
    assert prediction.source == predictor.policy.source("unseen-kernel")
    if prediction.source == "cost-model":
        first = list(prediction.candidates[:5])
        assert all(c.source == "cost-model" and c.logp is None for c in first)
        # diversified: the first five are not all one parameter apart from the first
        differing = [sum(a != b for a, b in zip(first[0].config.values(), c.config.values(), strict=True))
                     for c in first[1:]]
        assert max(differing) >= 2


# -- hostile model files: a one-line refusal, never a hang or a crash later ------------------------
@pytest.mark.parametrize("name", [REUSE_FILE, POLICY_FILE, "confidence.json"])
def test_a_model_file_that_is_a_fifo_or_a_device_is_refused_at_once(tmp_path, name) -> None:
    import os

    from agent.predict.confidence import Calibration
    from agent.predict.model_files import model_version

    loaders = {REUSE_FILE: ReuseIndex.load, POLICY_FILE: Policy.load, "confidence.json": Calibration.load}
    fifo = tmp_path / "fifo" / name
    fifo.parent.mkdir()
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(ModelFileError, match="not a regular file"):
        loaders[name](fifo)
    device = tmp_path / "device" / name
    device.parent.mkdir()
    device.symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(ModelFileError, match="not a regular file"):
        loaders[name](device)
    # The model version (status, the hook) hashes the folder's files: it must not hang on them either.
    shutil.copyfile(MODELS / "edgetune-student-q4_0.gguf", fifo.parent / "edgetune-student-q4_0.gguf")
    assert model_version(fifo.parent) is not None


def test_a_reuse_index_with_wrong_types_is_refused_by_field(tmp_path) -> None:
    good = {"kernel": "gemm", "shape": {"M": 64}, "source": "a", "ranked": [{"TILE": 16}],
            "hardware": {"kind": "cpu", "cores": 4, "l2_bytes": 1048576}}
    bad = {"hardware": {**good["hardware"], "cores": "four"}, "shape": {"M": "abc"},
           "ranked": [{"TILE": True}], "kernel": 7}
    import json

    for field, value in bad.items():
        path = tmp_path / f"{field}.json.gz"
        path.write_bytes(gzip.compress(json.dumps({"cases": [{**good, field: value}]}).encode()))
        with pytest.raises(ModelFileError, match=f"{field}.json.gz: not a reuse index"):
            ReuseIndex.load(path)
    bomb = tmp_path / "bomb.json.gz"  # 80 MB of blanks packed small: refused at the unpacked limit
    bomb.write_bytes(gzip.compress(b" " * (80 << 20), compresslevel=1))
    with pytest.raises(ModelFileError, match="unpacks to more than"):
        ReuseIndex.load(bomb)


def test_nan_or_out_of_range_numbers_in_policy_or_calibration_are_refused(tmp_path) -> None:
    from agent.predict.confidence import Calibration

    (tmp_path / "p.json").write_text('{"choices": {"seen": "reuse"}, "evidence": {"seen": {"good": {"reuse": NaN}}}}')
    with pytest.raises(ModelFileError, match="not within"):
        Policy.load(tmp_path / "p.json")
    (tmp_path / "c.json").write_text('{"intercept": NaN, "coefficients": [1, 1, 1], "threshold": 0.5, '
                                     '"use_cost_model": true}')
    with pytest.raises(ModelFileError, match="out of range"):
        Calibration.load(tmp_path / "c.json")
