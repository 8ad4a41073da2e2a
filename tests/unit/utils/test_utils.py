from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from src.utils import atomic_write_bytes, capture_rng_state, get_device, restore_rng_state, seed_everything


def test_get_device_auto_and_override():
    assert get_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert get_device().type == expected
    assert get_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_get_device_unavailable_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device("cuda")


def test_get_device_rejects_nonsense():
    with pytest.raises(ValueError, match="Unknown device 'gpu-please'"):
        get_device("gpu-please")


def test_rng_state_round_trip_through_safe_load(tmp_path):
    seed_everything(5)
    state = capture_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"old")

    def explode():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(target, b"new", before_replace=explode)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
