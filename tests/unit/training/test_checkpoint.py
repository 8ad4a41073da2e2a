"""CheckpointManager: files, manifests, verification, partial loading, faults."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from src.models import ModelRegistry, build_model
from src.training import CheckpointCorruptError, CheckpointError, CheckpointManager, CheckpointSaveError
from src.training.checkpoint import manifest_path, sha256_file


@pytest.fixture
def parts():
    torch.manual_seed(0)
    model = ModelRegistry.create("mlp", hidden_sizes=[16])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_documented_files_and_keys(tmp_path, parts):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path), save_frequency=2)
    assert manager.save_best_model(model, optimizer, 1, 0.5, 80.0) is True
    assert manager.save_best_model(model, optimizer, 2, 0.4, 79.0) is False
    manager.save_latest_checkpoint(model, optimizer, 2, 0.4, 79.0)
    manager.save_epoch_checkpoint(model, optimizer, 2, 0.4, 79.0)
    manager.save_checkpoint(model, optimizer, 3, 0.3, 81.0, filepath=str(tmp_path / "custom.pt"))
    names = {p.name for p in tmp_path.glob("*.pt")}
    assert names == {"best_model.pt", "latest_checkpoint.pt", "epoch_2.pt", "custom.pt"}
    payload = torch.load(tmp_path / "best_model.pt", weights_only=True)
    for key in (
        "epoch",
        "model_state_dict",
        "optimizer_state_dict",
        "loss",
        "accuracy",
        "model_config",
        "format_version",
        "versions",
    ):
        assert key in payload
    assert payload["epoch"] == 1 and payload["accuracy"] == 80.0
    assert build_model(payload["model_config"]).load_state_dict(payload["model_state_dict"])


def test_load_checkpoint_strict_and_report(tmp_path, parts):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path))
    manager.save_latest_checkpoint(model, optimizer, 4, 0.25, 90.0)
    fresh = ModelRegistry.create("mlp", hidden_sizes=[16])
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    info = manager.load_checkpoint(manager.latest_path, fresh, fresh_optimizer)
    assert info["epoch"] == 4 and info["loss"] == 0.25 and info["accuracy"] == 90.0
    assert info["fully_restored"] and info["loaded_layers"] == info["total_layers"] == 4
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert fresh_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_partial_load_reports_and_strict_refuses(tmp_path, parts):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path))
    manager.save_latest_checkpoint(model, optimizer, 1, 0.5, 50.0)
    other = ModelRegistry.create("mlp", hidden_sizes=[16], num_classes=5)  # different head
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"net\.3\.weight \(checkpoint \(10, 16\), model \(5, 16\)\)"):
        manager.load_checkpoint(manager.latest_path, other, strict=True)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items()), "strict refusal loads nothing"
    info = manager.load_checkpoint(manager.latest_path, other, strict=False)
    assert not info["fully_restored"] and info["loaded_layers"] == 2 and info["total_layers"] == 4
    assert len(info["skipped"]) == 2
    assert torch.equal(other.state_dict()["net.1.weight"], model.state_dict()["net.1.weight"])


def test_exception_mid_save_keeps_previous_checkpoint_byte_identical(tmp_path, parts, monkeypatch):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path))
    manager.save_latest_checkpoint(model, optimizer, 1, 0.5, 50.0)
    before = manager.latest_path.read_bytes()
    import src.utils.io as io_module

    real_write_all = io_module._write_all

    def write_half_then_fail(fd, data):
        real_write_all(fd, data[: len(data) // 2])
        raise RuntimeError("simulated crash in the middle of a save")

    monkeypatch.setattr(io_module, "_write_all", write_half_then_fail)
    with pytest.raises(RuntimeError, match="simulated crash"):
        manager.save_latest_checkpoint(model, optimizer, 2, 0.4, 60.0)
    assert manager.latest_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest_checkpoint.pt", "latest_checkpoint.pt.manifest.json"]
    assert manager.verify(manager.latest_path)[0]


def test_disk_full_is_a_clear_error_and_keeps_older_checkpoints(tmp_path, parts, monkeypatch):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path), save_frequency=1)
    manager.save_epoch_end(model, optimizer, 1, 0.5, 50.0)
    snapshot = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    import src.utils.io as io_module

    def disk_full(fd, data):
        os.write(fd, data[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io_module, "_write_all", disk_full)
    with pytest.raises(CheckpointSaveError, match=r"Could not save checkpoint .*No space left on device.*intact"):
        manager.save_epoch_end(model, optimizer, 2, 0.4, 60.0)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == snapshot
    path, payload, problems = manager.find_latest_valid()
    assert payload["epoch"] == 1 and not problems


def test_unwritable_directory_is_a_clear_error(tmp_path, parts, monkeypatch):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path))
    import src.utils.io as io_module

    def no_permission(path):
        # CI runs as root, which ignores directory modes, so the refusal is injected.
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(io_module, "temp_path_for", no_permission)
    with pytest.raises(CheckpointSaveError, match="Permission denied"):
        manager.save_latest_checkpoint(model, optimizer, 1, 0.5, 50.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "empty", "bitflip", "no_manifest"])
def test_damaged_latest_falls_back_to_newest_valid(tmp_path, parts, damage):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path), save_frequency=1)
    for epoch in (1, 2, 3):
        manager.save_epoch_end(model, optimizer, epoch, 1.0 / epoch, 50.0 + epoch, {"global_step": 10 * epoch})
    latest = manager.latest_path
    data = latest.read_bytes()
    if damage == "truncate":
        latest.write_bytes(data[: len(data) // 3])
    elif damage == "empty":
        latest.write_bytes(b"")
    elif damage == "bitflip":
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x10
        latest.write_bytes(bytes(flipped))
    else:
        manifest_path(latest).unlink()
    ok, reason, _ = manager.verify(latest)
    assert not ok and reason
    if damage != "no_manifest":  # a file without manifest may be a user's own: read() warns, verify() refuses
        with pytest.raises(CheckpointCorruptError, match="latest_checkpoint.pt is corrupt"):
            manager.read(latest)
    path, payload, problems = manager.find_latest_valid()
    # epoch_3.pt holds the same state as the damaged latest; the choice is by recorded step.
    assert path.name == "epoch_3.pt" and payload["epoch"] == 3
    assert problems and problems[0].startswith("latest_checkpoint.pt")


def test_latest_is_chosen_by_recorded_step_not_mtime(tmp_path, parts):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path), save_frequency=1)
    manager.save_epoch_end(model, optimizer, 1, 0.5, 50.0, {"global_step": 10})
    manager.save_epoch_end(model, optimizer, 2, 0.4, 40.0, {"global_step": 20})
    old = tmp_path / "epoch_1.pt"
    os.utime(old, (4_000_000_000, 4_000_000_000))  # make the oldest file look newest
    path, payload, _ = manager.find_latest_valid()
    assert payload["epoch"] == 2 and path.name == "latest_checkpoint.pt"


def test_keep_last_retention(tmp_path, parts):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path), save_frequency=1, keep_last=2)
    for epoch in range(1, 6):
        manager.save_epoch_end(model, optimizer, epoch, 1.0, 90.0 - epoch)
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert names == ["best_model.pt", "epoch_4.pt", "epoch_5.pt", "latest_checkpoint.pt"]
    assert not (tmp_path / "epoch_1.pt.manifest.json").exists()
    assert torch.load(tmp_path / "best_model.pt", weights_only=True)["epoch"] == 1


def test_leftover_temporary_files_are_cleaned(tmp_path):
    (tmp_path / ".latest_checkpoint.pt.tmp-123-abcd").write_bytes(b"half a checkpoint")
    manager = CheckpointManager(str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert manager.find_latest_valid() == (None, None, [])


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_malicious_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    _RunsCode.marker = marker
    evil = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {}, "payload": _RunsCode()}, evil)
    manager = CheckpointManager(str(tmp_path / "checkpoints"))
    model = ModelRegistry.create("mlp", hidden_sizes=[4])
    with pytest.warns(UserWarning, match="no manifest"):
        with pytest.raises(CheckpointCorruptError, match=r"refused: .*\((posix|os)\.system\)"):
            manager.load_checkpoint(evil, model)
    assert not marker.exists(), "the pickled command must not have run"
    # The same file really does run code when loaded unsafely: the test above is meaningful.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_sha256_file_matches_manifest(tmp_path, parts):
    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path))
    manager.save_latest_checkpoint(model, optimizer, 1, 0.5, 50.0)
    assert manager.verify(manager.latest_path)[2]["sha256"] == sha256_file(manager.latest_path)


def test_crash_inside_a_save_never_hides_a_newer_valid_copy(tmp_path, parts):
    """A save killed between its two manifest writes leaves latest claiming the new state
    while holding the old one; the newer epoch file must still be found."""
    import json

    model, optimizer = parts
    manager = CheckpointManager(str(tmp_path), save_frequency=1)
    manager.save_epoch_end(model, optimizer, 5, 0.5, 50.0, {"global_step": 50})
    manager.save_checkpoint(model, optimizer, 6, 0.4, 40.0, manager.epoch_path(6), {"global_step": 60})
    manifest = json.loads(manifest_path(manager.latest_path).read_text())
    manifest["entries"].append({"sha256": "0" * 64, "size": 1, "epoch": 6, "step": 60})
    manifest_path(manager.latest_path).write_text(json.dumps(manifest))
    assert manager.verify(manager.latest_path)[0], "the old bytes are still valid"
    path, payload, problems = manager.find_latest_valid()
    assert path.name == "epoch_6.pt" and payload["epoch"] == 6 and not problems
