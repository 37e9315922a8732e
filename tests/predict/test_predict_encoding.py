"""The vocabulary and prompt encoding: closed, stable, and able to describe a kernel it never saw."""

from __future__ import annotations

import pytest

from agent.kernels.features import kernel_features
from agent.kernels.registry import find_kernel
from agent.predict.prompt import ConfigCodec, HardwareDesc, encode_prompt, hardware_desc, kernel_desc, prompt_tokens
from agent.predict.vocab import VOCAB_DIGEST, VOCAB_VERSION, numeric_value, vocabulary


def test_vocabulary_is_the_recorded_version() -> None:
    vocab = vocabulary()
    # A changed token list without a new version would silently break every shipped model.
    assert vocab.version == VOCAB_VERSION
    assert vocab.digest() == VOCAB_DIGEST
    assert vocab.tokens[:3] == ("<unk>", "<s>", "</s>")
    assert vocab.tokens[3] == "<0x00>" and vocab.tokens[258] == "<0xFF>"
    assert len(set(vocab.tokens)) == vocab.size
    types = vocab.token_types()
    assert len(types) == vocab.size and types[0] == 2 and types[1] == 3 and types[3] == 6 and types[-1] == 1
    with pytest.raises(ValueError, match="version 99"):
        vocabulary(99)


def test_unknown_values_fall_back_to_the_field_unknown_token() -> None:
    vocab = vocabulary()
    assert vocab.token(vocab.id("simd=4096")) == "simd=?"
    assert vocab.token(vocab.id("tile#0=12345678")) == "tile#0=?"
    assert vocab.id("nonsense=1") == 0


@pytest.mark.parametrize(("value", "token"), [(0, "0"), (16, "16"), (48, "48"), (47, "48"), (100, "96"),
                                              (True, "1"), (-3, "?"), (2.5, "?"), (64.0, "64")])
def test_numeric_values_map_to_the_nearest_grid_token(value: object, token: str) -> None:
    assert numeric_value(value) == token


def test_a_new_kernel_is_encoded_by_its_parameter_roles() -> None:
    vocab = vocabulary()
    params = [{"name": "MY_TILE_A", "role": "tile", "values": [8, 32]},
              {"name": "LANES", "role": "vector", "values": [1, 8]},
              {"name": "MY_TILE_B", "role": "tile", "values": [16, 64]},
              {"name": "SCHEDULE", "role": "order", "values": ["static", "dynamic"]},
              {"name": "NT", "role": "threads", "values": [1, 4]}]
    codec = ConfigCodec.for_params(params)
    # Canonical order: threads, order, vector, then tiles in declaration order.
    assert codec.names() == ["NT", "SCHEDULE", "LANES", "MY_TILE_A", "MY_TILE_B"]
    tokens = [vocab.token(i) for i in codec.encode(
        {"MY_TILE_A": 32, "LANES": 8, "MY_TILE_B": 16, "SCHEDULE": "dynamic", "NT": 4})]
    assert tokens == ["threads#0=4", "order#0=c1", "vector#0=8", "tile#0=32", "tile#1=16"]
    with pytest.raises(KeyError):
        codec.encode({"MY_TILE_A": 33, "LANES": 8, "MY_TILE_B": 16, "SCHEDULE": "dynamic", "NT": 4})


def test_the_prompt_tells_compile_targets_and_hidden_names_apart() -> None:
    spec = find_kernel("gemm")
    desc = kernel_desc(spec.space_summary() | {"dimensions": list(spec.dimensions)}, name="gemm", spec=spec,
                       features=kernel_features(spec))
    profile = {"arch": "x86_64", "vector_bits": 512, "physical_cores": 2, "l1d_bytes": 32768,
               "l2_bytes": 1 << 20, "l3_bytes": 32 << 20}
    shape = {"M": 256, "N": 256, "K": 256}
    wide = prompt_tokens(hardware_desc(profile), desc, shape)
    narrow = prompt_tokens(hardware_desc(profile, vector_bits=128, cores=1), desc, shape)
    assert "simd=512" in wide and "simd=128" in narrow and "cores=1" in narrow
    assert {"kernel=gemm", "depth=6", "reduction=1", "dim#0=b8", "ws=l2", "ai=b5"} <= set(wide)
    hidden = prompt_tokens(hardware_desc(profile), desc, shape, hide_name=True)
    assert "kernel=?" in hidden and [t for t in hidden if not t.startswith("kernel=")] == \
        [t for t in wide if not t.startswith("kernel=")]
    ids = encode_prompt(hardware_desc(profile), desc, shape)
    vocab = vocabulary()
    assert ids[0] == vocab.bos and ids[-1] == vocab.config_mark and 0 not in ids


def test_a_gpu_prompt_uses_gpu_fields() -> None:
    hw = hardware_desc({"kind": "gpu", "vendor": "nvidia", "architecture": "ampere", "multiprocessors": 108,
                        "l2_bytes": 40 << 20, "shared_memory_per_block_bytes": 163 << 10, "bandwidth_gbs": 1555.0})
    assert isinstance(hw, HardwareDesc) and hw.kind == "gpu"
    desc = kernel_desc({"params": [{"name": "block_size_x", "role": "block", "values": [32, 64]}],
                        "dimensions": ["X"]}, name="someone_elses_kernel")
    tokens = prompt_tokens(hw, desc, {"X": 4096})
    assert {"dev=gpu", "vendor=nvidia", "gpuarch=ampere", "sm=b7", "bw=b11", "kernel=?", "n_block=1",
            "dim#0=b12"} <= set(tokens)
