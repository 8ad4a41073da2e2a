"""imagefolder: the folder layout and its errors, the decoding policies, the decoded cache
(reuse, invalidation, damage, races), bad images, memory mapping, and learning from it."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from src.config import ConfigError
from src.datasets import DataError, DatasetRegistry
from src.datasets import image_cache
from src.datasets.image_cache import decode_image
from src.errors import WriteError
from src.models import ModelRegistry
from src.training import ExperimentManager, Trainer
from tests.fake_data import CLASSES, make_folder


def create(root: Path, **options):
    options.setdefault("workers", 1)
    options.setdefault("progress", False)
    return DatasetRegistry.create("imagefolder", root=str(root), **options)


# -- layout, classes, shapes --------------------------------------------------------------


def test_mixed_formats_and_sizes_load_with_image_size(folder):
    root = folder("mixed")
    (root / "train" / "circle" / ".DS_Store").write_bytes(b"\0junk")  # hidden: ignored silently
    data = create(root, image_size=16)
    assert data.class_names == ["circle", "square", "triangle"] and data.num_classes == 3
    assert data.input_shape == (3, 16, 16) and data.train_images.dtype == torch.uint8
    assert len(data) == 36 and len(data.test_labels) == 12
    assert torch.equal(torch.bincount(data.train_labels), torch.tensor([12, 12, 12]))
    assert not data.cache_reused and not data.memory_mapped and data.skipped_files == []
    assert data.augmentation_policy == "crop-flip"
    assert data.cache_path.parent == root / ".exptrain-cache"
    meta = json.loads((data.cache_path / "meta.json").read_text())
    assert meta["splits"]["train"]["shape"] == [36, 3, 16, 16] and meta["class_names"] == data.class_names
    assert data.mean == pytest.approx(meta["mean"]) and len(data.std) == 3
    # The cache's mean/std and content hash are what the base class would compute itself.
    from src.datasets import channel_statistics

    mean, std = channel_statistics(data.train_images)
    assert data.mean == pytest.approx(mean, abs=1e-12) and data.std == pytest.approx(std, abs=1e-12)
    assert data.fingerprint()["sha256"] == data._hash_content() == meta["content_sha256"]
    # Each class's dominant colour survives every format and mode (JPEG and palette ones roughly).
    for label, colour in enumerate(CLASSES.values()):
        images = data.train_images[data.train_labels == label].float()
        brightest = images.amax(dim=(2, 3)).mean(0)
        assert int(brightest.argmax()) == int(np.argmax(colour)), (label, brightest)


def test_uniform_folder_needs_no_image_size_and_test_folder_works(tmp_path):
    root = make_folder(tmp_path / "data", train=2, val=2, sizes=((20, 12),), val_name="test")
    data = create(root)
    assert data.input_shape == (3, 12, 20) and len(data.test_labels) == 6


def test_all_grey_images_give_one_channel(tmp_path):
    root = make_folder(tmp_path / "data", train=2, val=1, formats=((".png", "L"), (".bmp", "1"), (".png", "LA")))
    data = create(root)
    assert data.input_shape == (1, 24, 24) and data.augmentation_policy == "crop-flip"


def test_a_class_missing_from_val_is_fine(folder):
    root = folder("uniform")
    shutil.rmtree(root / "val" / "square")
    data = create(root)
    assert data.num_classes == 3 and sorted(set(data.test_labels.tolist())) == [0, 2]


LAYOUT_ERRORS = {
    "missing root": (lambda root: shutil.rmtree(root), "does not exist"),
    "root is a file": (lambda root: (shutil.rmtree(root), root.write_text("x")), "is not a folder"),
    "no train": (lambda root: shutil.rmtree(root / "train"), "has no train/ folder"),
    "no val or test": (lambda root: shutil.rmtree(root / "val"), "has no val/ or test/ folder"),
    "val is a file": (lambda root: (shutil.rmtree(root / "val"), (root / "val").write_text("x")), "is a file where"),
    "unknown class in val": (
        lambda root: (root / "val" / "square").rename(root / "val" / "hexagon"),
        "class folder 'hexagon' that",
    ),
    "empty class folder": (lambda root: (root / "train" / "zebra").mkdir(), "zebra holds no images"),
    "only non-images in a class": (
        lambda root: ((root / "train" / "zebra").mkdir(), (root / "train" / "zebra" / "a.txt").write_text("x")),
        "zebra holds no images",
    ),
    "file in train": (lambda root: (root / "train" / "labels.csv").write_text("x"), "'labels.csv' where only class"),
    "no class folders": (lambda root: [shutil.rmtree(p) for p in (root / "train").iterdir()], "holds no class folders"),
    "no val images": (lambda root: [shutil.rmtree(p) for p in (root / "val").iterdir()], "holds no images"),
}


@pytest.mark.parametrize("case", list(LAYOUT_ERRORS))
def test_layout_errors_are_one_clear_sentence(folder, case):
    root = folder("uniform")
    damage, fragment = LAYOUT_ERRORS[case]
    damage(root)
    with pytest.raises(DataError) as error:
        create(root)
    message = str(error.value)
    assert fragment in message and "\n" not in message and message.endswith("."), message
    assert not (root / ".exptrain-cache").exists() or not any((root / ".exptrain-cache").iterdir())


BAD_OPTIONS = [
    ({"image_size": 0}, "image_size", "got 0"),
    ({"image_size": "32"}, "image_size", "got '32'"),
    ({"image_size": True}, "image_size", "got True"),
    ({"image_size": 16.5}, "image_size", "got 16.5"),
    ({"image_size": 100_000}, "image_size", "limit"),
    ({"memory_budget_mb": -1}, "memory_budget_mb", "got -1"),
    ({"memory_budget_mb": float("nan")}, "memory_budget_mb", "nan"),
    ({"memory_budget_mb": "1GB"}, "memory_budget_mb", "'1GB'"),
    ({"workers": 0}, "workers", "got 0"),
    ({"workers": 2.0}, "workers", "got 2.0"),
    ({"skip_bad_images": "yes"}, "skip_bad_images", "got 'yes'"),
    ({"progress": 1}, "progress", "got 1"),
    ({"cache_dir": 5}, "cache_dir", "got 5"),
    ({"cache_dir": ""}, "cache_dir", "got ''"),
    ({"root": ["a"]}, "root", "got ['a']"),
]


@pytest.mark.parametrize("options,option,fragment", BAD_OPTIONS, ids=[repr(o[0]) for o in BAD_OPTIONS])
def test_bad_options_are_one_clear_config_error(folder, options, option, fragment):
    root = folder("uniform")
    options = {"root": str(root), "progress": False, **options}
    with pytest.raises(ConfigError) as error:
        DatasetRegistry.create("imagefolder", **options)
    message = str(error.value)
    assert f"--dataset-option {option}" in message and fragment in message, message
    assert not (root / ".exptrain-cache").exists()


def test_missing_root_and_cache_inside_a_split_are_refused(folder):
    with pytest.raises(ConfigError, match="needs --dataset-option root=PATH"):
        DatasetRegistry.create("imagefolder")
    root = folder("uniform")
    with pytest.raises(ConfigError, match="cache_dir .* lies inside"):
        create(root, cache_dir=str(root / "train" / "cache"))
    assert not (root / "train" / "cache").exists()


def test_linked_folders_are_followed_once(folder):
    root = folder("uniform")
    os.symlink(root / "train" / "circle", root / "train" / "circle" / "loop")  # a link loop
    os.symlink(root / "val" / "circle", root / "train" / "circle" / "more")
    data = create(root)
    assert torch.equal(torch.bincount(data.train_labels), torch.tensor([16, 12, 12]))


def test_non_image_files_are_ignored_with_one_warning(folder):
    root = folder("uniform")
    (root / "train" / "circle" / "notes.txt").write_text("x")
    (root / "val" / "square" / "README").write_text("x")
    with pytest.warns(UserWarning, match=r"Ignored 2 files .* not an image by extension: 'train/circle/notes.txt'"):
        data = create(root)
    assert len(data) == 36


# -- decoding policies -----------------------------------------------------------------------


def test_transparency_is_composited_on_black_and_16_bit_grey_is_scaled(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:, :2, 3] = 255  # left half opaque white, right half transparent white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    decoded = decode_image(str(tmp_path / "a.png"), 3, None)
    assert decoded.shape == (3, 4, 4) and (decoded[:, :, :2] == 255).all() and (decoded[:, :, 2:] == 0).all()
    assert (decode_image(str(tmp_path / "a.png"), 1, None) == decoded[:1]).all()

    Image.fromarray(np.array([[0, 257, 65535, 32896]], dtype=np.uint16)).save(tmp_path / "b.png")
    assert decode_image(str(tmp_path / "b.png"), 1, None).tolist() == [[[0, 1, 255, 128]]]
    assert decode_image(str(tmp_path / "b.png"), 3, None)[:, 0, 2].tolist() == [255, 255, 255]

    palette = Image.new("P", (3, 2))
    palette.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "c.bmp")
    decoded = decode_image(str(tmp_path / "c.bmp"), 3, None)
    assert decoded[:, 0, 0].tolist() == [10, 20, 30] and decoded[:, 0, 1].tolist() == [200, 100, 0]


def test_resize_shorter_side_then_centre_crop(tmp_path):
    stripes = np.zeros((20, 60, 3), dtype=np.uint8)
    stripes[:, 16:44] = 255  # white a little beyond the middle third, which the crop keeps
    Image.fromarray(stripes).save(tmp_path / "wide.png")
    decoded = decode_image(str(tmp_path / "wide.png"), 3, 10)  # 60x20 -> 30x10 -> centre 10x10
    assert decoded.shape == (3, 10, 10) and (decoded == 255).all()
    assert decoded.sum() < 3 * 100 * 255 + 1  # nothing beyond white
    cropped = decode_image(str(tmp_path / "wide.png"), 3, 20)  # shorter side already 20: crop only, no filter
    assert np.array_equal(cropped, stripes[:, 20:40].transpose(2, 0, 1))
    tall = np.zeros((30, 10), dtype=np.uint8)
    tall[10:20] = 255
    Image.fromarray(tall).save(tmp_path / "tall.png")
    assert (decode_image(str(tmp_path / "tall.png"), 1, 10) == 255).all()  # 10x30 -> crop rows 10..20


# -- the cache --------------------------------------------------------------------------------


class Decoded(BaseException):
    """Raised by a forbidden decode (a BaseException: decoding errors are caught as bad images)."""


def forbid_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise Decoded("decoded although the cache was valid")

    monkeypatch.setattr(image_cache, "decode_image", refuse)
    monkeypatch.setattr(image_cache, "read_header", refuse)


def test_second_load_reuses_the_cache_without_decoding(folder, monkeypatch):
    root = folder("mixed")
    first = create(root, image_size=16)
    forbid_decoding(monkeypatch)
    second = create(root, image_size=16, workers=2)
    assert second.cache_reused and second.cache_path == first.cache_path
    assert torch.equal(first.train_images, second.train_images) and torch.equal(first.test_labels, second.test_labels)
    assert first.fingerprint() == second.fingerprint()
    with pytest.raises(Decoded):  # another image size is another cache
        create(root, image_size=12)


def test_a_changed_file_builds_a_new_cache_and_removes_the_old(folder):
    root = folder("uniform")
    first = create(root)
    path = root / "train" / "square" / "001.png"
    stat = path.stat()
    Image.new("RGB", (24, 24), (255, 255, 255)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same time: the size still differs
    second = create(root)
    assert not second.cache_reused and second.cache_path != first.cache_path
    assert not first.cache_path.exists(), "the superseded cache is removed"
    index = (second.train_labels == 1).nonzero()[1]
    assert (second.train_images[index] == 255).all()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # only the time changes
    assert not create(root).cache_reused


def test_moving_the_folder_keeps_its_cache(folder, monkeypatch):
    root = folder("uniform")
    first = create(root)
    moved = root.rename(root.with_name("moved"))
    forbid_decoding(monkeypatch)
    assert create(moved).cache_reused and create(moved).fingerprint() == first.fingerprint()


DAMAGE = {
    "truncated image file": lambda cache: os.truncate(cache / "train_images.u8", 100),
    "extended image file": lambda cache: open(cache / "test_images.u8", "ab").write(b"\0"),
    "bad meta.json": lambda cache: (cache / "meta.json").write_text("{not json"),
    "meta.json missing": lambda cache: (cache / "meta.json").unlink(),
    "labels changed": lambda cache: np.save(cache / "train_labels.npy", np.zeros(36, dtype=np.int64)),
    "wrong shape in meta": lambda cache: edit_meta(
        cache, lambda meta: meta["splits"]["test"].update(shape=[12, 3, 25, 24])
    ),
    "mean missing": lambda cache: edit_meta(cache, lambda meta: meta.pop("mean")),
    "meta is a list": lambda cache: (cache / "meta.json").write_text("[]"),
}


def edit_meta(cache: Path, change) -> None:
    meta = json.loads((cache / "meta.json").read_text())
    change(meta)
    (cache / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_cache_is_rebuilt_with_a_warning(folder, case):
    root = folder("uniform")
    first = create(root)
    DAMAGE[case](first.cache_path)
    with pytest.warns(UserWarning, match="is damaged .* rebuilding it"):
        second = create(root)
    assert not second.cache_reused and second.cache_path == first.cache_path
    assert torch.equal(first.train_images, second.train_images) and first.fingerprint() == second.fingerprint()


def test_a_killed_build_leaves_no_cache_and_its_leftovers_are_removed(folder, monkeypatch):
    root = folder("uniform")
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return real(*args)

    real = image_cache.decode_image
    monkeypatch.setattr(image_cache, "decode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create(root)
    assert list((root / ".exptrain-cache").iterdir()) == []
    # A SIGKILLed build leaves its staging folder: the next build on this host removes it.
    dead = root / ".exptrain-cache" / f".staging-0123456789abcdef-{image_cache.socket.gethostname()}-999999999-abcd1234"
    (dead / "x").mkdir(parents=True)
    monkeypatch.setattr(image_cache, "decode_image", real)
    data = create(root)
    assert [p.name for p in (root / ".exptrain-cache").iterdir()] == [data.cache_path.name]


def test_two_builders_at_once_both_end_with_the_first_cache(folder, monkeypatch):
    root = folder("uniform")
    others, started = [], []
    real_write = image_cache.atomic_write_text

    def slow_meta_write(path, text):
        if not started:  # the other process builds and renames while this one is about to
            started.append(True)
            others.append(create(root))
        real_write(path, text)

    monkeypatch.setattr(image_cache, "atomic_write_text", slow_meta_write)
    data = create(root)
    assert others[0].cache_path == data.cache_path and data.fingerprint() == others[0].fingerprint()
    assert [p.name for p in (root / ".exptrain-cache").iterdir()] == [data.cache_path.name]


def test_an_unwritable_root_caches_elsewhere_and_says_so(folder, monkeypatch, tmp_path):
    root = folder("uniform")
    real = image_cache._try_folder
    monkeypatch.setattr(image_cache, "_try_folder", lambda path: path != root / ".exptrain-cache" and real(path))
    monkeypatch.setenv("EXPTRAIN_CACHE_DIR", str(tmp_path / "elsewhere"))
    with pytest.warns(UserWarning, match="Cannot write the image cache next to the data .* caching in .*elsewhere"):
        data = create(root)
    assert data.cache_path.parent == tmp_path / "elsewhere"
    explicit = create(root, cache_dir=str(tmp_path / "mine"))
    assert explicit.cache_path.parent == tmp_path / "mine" and explicit.fingerprint() == data.fingerprint()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cache folder .*file.* cannot be created or written; pass another cache_dir"):
        create(root, cache_dir=str(tmp_path / "file"))


def test_a_full_disk_is_refused_before_and_reported_during_the_build(folder, monkeypatch):
    root = folder("uniform")
    monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 1 << 20))
    with pytest.raises(DataError, match="needs 81.0 KiB in .*, but only 1.0 MiB is free; free disk space"):
        create(root)
    monkeypatch.undo()

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(WriteError, match="Could not write the image cache in .*: No space left on device; free"):
        create(root)
    assert list((root / ".exptrain-cache").iterdir()) == []


def test_parallel_decoding_equals_serial(folder, monkeypatch):
    monkeypatch.setattr(image_cache, "HEADER_CHUNK", 8)  # several tasks per worker
    monkeypatch.setattr(image_cache, "DECODE_CHUNK", 5)
    serial = create(folder("mixed"), image_size=16, cache_dir=None)
    parallel = create(serial.root, image_size=16, workers=2, cache_dir=str(serial.root.parent / "other"))
    assert not parallel.cache_reused and parallel.fingerprint() == serial.fingerprint()


# -- bad images and mixed sizes -----------------------------------------------------------------


def damage_images(root: Path) -> None:
    png = root / "train" / "circle" / "003.png"
    png.write_bytes(png.read_bytes()[:-40])  # truncated: the header reads, the pixels do not
    (root / "val" / "square" / "001.png").write_text("not an image")  # cannot even be opened
    (root / "train" / "triangle" / "000.png").write_bytes(b"")


def test_unreadable_and_truncated_images_are_one_error_listing_them(folder):
    root = folder("uniform")
    damage_images(root)
    with pytest.raises(DataError) as error:
        create(root)
    message = str(error.value)
    assert message.startswith("3 image files in ") and "\n" not in message, message
    for name in ("train/circle/003.png", "val/square/001.png", "train/triangle/000.png"):
        assert name in message
    assert "skip_bad_images=true" in message
    assert list((root / ".exptrain-cache").iterdir()) == []


def test_skip_bad_images_skips_them_with_a_warning(folder, monkeypatch):
    root = folder("uniform")
    clean = create(root)
    damage_images(root)
    with pytest.warns(UserWarning, match=r"Skipped 3 unreadable image files .*train/circle/003.png"):
        data = create(root, skip_bad_images=True)
    assert len(data) == 34 and len(data.test_labels) == 11 and len(data.skipped_files) == 3
    keep = [i for i in range(36) if i not in (3, 24)]  # circle 003 and triangle 000
    assert torch.equal(data.train_images, clean.train_images[keep])
    assert torch.equal(data.train_labels, clean.train_labels[keep])
    forbid_decoding(monkeypatch)
    with pytest.warns(UserWarning, match="Skipped 3"):
        assert create(root, skip_bad_images=True).cache_reused
    with pytest.raises(DataError, match="3 image files in "):  # a cache that skipped files is no excuse
        create(root)


def test_mixed_sizes_without_image_size_name_two_files(folder):
    root = folder("mixed")
    with pytest.raises(DataError) as error:
        create(root)
    message = str(error.value)
    assert "train/circle/000.png is 24x24, train/circle/001.jpg is 40x30" in message, message
    assert "pass --image-size N" in message and "\n" not in message


def test_a_file_changed_during_the_build_is_caught(folder, monkeypatch):
    root = folder("uniform")
    real = image_cache.decode_image

    def touching(path, *args):
        if path.endswith("circle/005.png"):
            os.utime(path, ns=(0, 10**9))
        return real(path, *args)

    monkeypatch.setattr(image_cache, "decode_image", touching)
    with pytest.raises(DataError, match="005.png changed while the image cache was built; run again"):
        create(root)
    assert list((root / ".exptrain-cache").iterdir()) == []


# -- memory mapping and training ----------------------------------------------------------------


def test_memory_mapped_data_equals_in_memory(folder):
    root = folder("mixed")
    in_memory = create(root, image_size=16)
    mapped = create(root, image_size=16, memory_budget_mb=0.001)
    assert mapped.memory_mapped and not in_memory.memory_mapped and mapped.cache_reused
    assert torch.equal(mapped.train_images, in_memory.train_images)
    assert torch.equal(mapped.test_images, in_memory.test_images)
    assert mapped.fingerprint() == in_memory.fingerprint() and mapped.mean == in_memory.mean
    loaders = [data.get_dataloaders(batch_size=8)[0] for data in (in_memory, mapped)]
    for (a, labels_a), (b, labels_b) in zip(*loaders):  # augmented (crop-flip) batches, same order
        assert torch.equal(a, b) and torch.equal(labels_a, labels_b)


def train(data, tmp_path: Path, name: str, epochs: int) -> tuple:
    torch.manual_seed(0)
    train_loader, val_loader = data.get_dataloaders(batch_size=32)
    model = ModelRegistry.create("mlp", num_classes=3, in_channels=3, input_size=16, hidden_sizes=[32])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    experiment = ExperimentManager(base_dir=str(tmp_path / name), lock=False)
    trainer = Trainer(
        model,
        train_loader,
        val_loader,
        nn.CrossEntropyLoss(),
        optimizer,
        torch.device("cpu"),
        experiment,
        None,
        dataset=data,
        show_progress=False,
        plot_interval=3600,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = trainer.train(epochs=epochs)
    return results, model.state_dict()


def test_a_model_learns_the_shapes_and_memory_mapping_changes_nothing(folder, tmp_path):
    root = folder("shapes")
    data = create(root, image_size=16)
    results, weights = train(data, tmp_path, "in-memory", epochs=6)
    assert results["best_accuracy"] > 90, results["history"]["val_accuracy"]
    mapped = create(root, image_size=16, memory_budget_mb=0)
    assert mapped.memory_mapped and mapped.augment and mapped.augmentation_policy == "crop-flip"
    mapped_results, mapped_weights = train(mapped, tmp_path, "mapped", epochs=6)
    assert mapped_results["history"]["val_accuracy"] == results["history"]["val_accuracy"]
    for key in weights:
        assert torch.equal(weights[key], mapped_weights[key]), key


def test_mid_epoch_resume_on_a_memory_mapped_folder_with_crop_flip_redraws_is_bit_exact(folder, tmp_path):
    """A real mid-epoch checkpoint (as a signal writes it) of a memory-mapped image folder
    with crop-flip and a fresh draw every epoch, resumed by a new Trainer on a newly opened
    data set: the run ends with the weights of an uninterrupted one."""
    import signal

    from src.training import CheckpointManager

    root = folder("shapes")

    def build(name: str, **experiment):
        data = create(root, image_size=16, memory_budget_mb=0)
        assert data.memory_mapped and data.augmentation_policy == "crop-flip"
        torch.manual_seed(0)
        train_loader, val_loader = data.get_dataloaders(batch_size=16)
        model = ModelRegistry.create("mlp", num_classes=3, in_channels=3, input_size=16, hidden_sizes=[16])
        manager = ExperimentManager(base_dir=str(tmp_path / name), **experiment)
        trainer = Trainer(
            model,
            train_loader,
            val_loader,
            nn.CrossEntropyLoss(),
            torch.optim.AdamW(model.parameters(), lr=3e-3),
            torch.device("cpu"),
            manager,
            CheckpointManager(manager.checkpoints_dir),
            dataset=data,
            show_progress=False,
            plot_interval=3600,
        )
        return trainer, manager, model

    trainer, manager, straight = build("straight")
    trainer.train(epochs=3)
    manager.release()

    trainer, manager, _ = build("broken")
    per_epoch = len(trainer.train_loader)
    stop_at = per_epoch + per_epoch // 2  # inside epoch 2
    step = trainer._optimizer_step

    def step_then_signal():
        step()
        if trainer.global_step == stop_at:
            trainer.stop_request.signum = signal.SIGTERM  # what the handler records

    trainer._optimizer_step = step_then_signal
    from src.training.interrupts import TrainingInterrupted

    with pytest.raises(TrainingInterrupted):
        trainer.train(epochs=3)
    manager.release()
    state = torch.load(Path(manager.checkpoints_dir) / "latest_checkpoint.pt", weights_only=True)
    assert state["mid_epoch"] and state["global_step"] == stop_at and state["epoch"] == 1

    trainer, manager, resumed = build("broken", resume_exp=manager.name)
    trainer.load_state_dict(state)
    trainer.train(epochs=3)
    manager.release()
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
