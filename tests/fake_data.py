"""Small data sets written to disk for tests: CIFAR batches in the official Python 2 format,
and image folders of generated shapes (every format and mode the image-folder data set reads)."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
PER_BATCH = 20


class Python2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the CIFAR files: protocol 2, every string
    a Python 2 ``str`` (SHORT_BINSTRING / BINSTRING, so keys load as ``b"data"`` under
    ``encoding="bytes"``), numpy's globals under their numpy 1 names, dtype args as ints."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)

    def reducer_override(self, obj):
        if isinstance(obj, np.dtype):
            function, args, state = obj.__reduce__()
            return function, (args[0], int(args[1]), int(args[2])), state
        return NotImplemented


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def write_cifar10(root: Path, seed: int = 0) -> dict:
    """A tiny ``cifar-10-batches-py``: 5 train batches and a test batch of 20 images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for index, name in enumerate(CIFAR10_FILES[:6]):
        data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, PER_BATCH)]
        label = f"training batch {index + 1} of 5" if name != "test_batch" else "testing batch 1 of 1"
        batch = {
            b"batch_label": label.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{index}_{i}.png".encode() for i in range(PER_BATCH)],
        }
        (folder / name).write_bytes(py2_pickle(batch))
        written[name] = (data, labels)
    meta = {b"num_cases_per_batch": PER_BATCH, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return written


# -- image folders ---------------------------------------------------------------------

CLASSES = {"circle": (0, 200, 0), "square": (220, 0, 0), "triangle": (0, 0, 230)}  # sorted names
# (extension, Pillow mode the file is saved in): every format and mode the data set must read.
FORMATS = [
    (".png", "RGB"),
    (".jpg", "RGB"),
    (".bmp", "RGB"),
    (".webp", "RGB"),
    (".png", "L"),
    (".png", "RGBA"),
    (".gif", "P"),
    (".png", "P"),
]


def shape_image(kind: str, size, rng: np.random.Generator) -> Image.Image:
    """A red square, green circle or blue triangle at a random place on a dark background."""
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 50, 3)))
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(min(size) // 5, min(size) // 3))
    cx, cy = int(rng.integers(r, width - r)), int(rng.integers(r, height - r))
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=CLASSES[kind])
    elif kind == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=CLASSES[kind])
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=CLASSES[kind])
    return image


def save_as(image: Image.Image, path: Path, mode: str) -> None:
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, quality=95) if path.suffix == ".jpg" else image.save(path)


def make_folder(
    root: Path,
    train: int = 12,
    val: int = 4,
    sizes=((24, 24),),
    formats=((".png", "RGB"),),
    seed: int = 0,
    val_name: str = "val",
) -> Path:
    """``root/train/<class>/`` and ``root/<val_name>/<class>/`` of generated shapes, cycling
    through ``sizes`` and ``formats``."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), (val_name, val)):
        for kind in CLASSES:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(count):
                extension, mode = formats[i % len(formats)]
                save_as(shape_image(kind, sizes[i % len(sizes)], rng), folder / f"{i:03d}{extension}", mode)
    return root
