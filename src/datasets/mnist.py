"""MNIST, Fashion-MNIST and the bundled 5,000-digit MNIST sample (10 classes each).

Their options are checked, and the data folder found usable, before anything is read or
downloaded; every label is checked against the 10 classes when the files are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

from .base import BaseDataset
from .idx import check_data_folder, ensure_idx_files, read_idx, resolve_data_root, DataError
from .options import check_download_options
from .registry import DatasetRegistry

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "mnist_sample"


class IdxImageDataset(BaseDataset):
    """A data set stored as the four standard IDX files."""

    default_augmentation = "affine"  # digits and clothes: a small warp, never a flip
    names: Optional[Sequence[str]] = None  # class names (default "0" .. "9")

    def _load_files(self, files: Dict[str, Path]) -> None:
        train_images = read_idx(files["train-images-idx3-ubyte.gz"])
        train_labels = read_idx(files["train-labels-idx1-ubyte.gz"])
        test_images = read_idx(files["t10k-images-idx3-ubyte.gz"])
        test_labels = read_idx(files["t10k-labels-idx1-ubyte.gz"])
        for images, labels, split in ((train_images, train_labels, "train"), (test_images, test_labels, "t10k")):
            if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                raise DataError(
                    f"The {split} files of {self.name} disagree: images {images.shape}, labels {labels.shape}; "
                    "replace them with a matching pair."
                )
        self._set_data(
            train_images.copy(),
            train_labels.astype("int64"),
            test_images.copy(),
            test_labels.astype("int64"),
            sources={"train": files["train-labels-idx1-ubyte.gz"], "test": files["t10k-labels-idx1-ubyte.gz"]},
            class_names=self.names,
        )


@DatasetRegistry.register("mnist")
class MNIST(IdxImageDataset):
    """The MNIST digits from ``<data root>/MNIST/raw``, downloaded when missing.

    Args:
        data_dir: the data root (default ``$EXPTRAIN_DATA_DIR``, else ``./data``).
        download: fetch missing files (``False``: a missing file is an error).
        mirrors: base URLs to download from, tried in order (default: the class's own).
        progress: show a download progress bar.

    Raises:
        ConfigError: an option of the wrong type (``download="no"``, ``mirrors="http://..."``).
        DataError: the data folder is a file or unreadable, files are missing and cannot
            be downloaded, or a file is damaged (including a label outside 0..9).
    """

    name = "mnist"
    folder_name = "MNIST"
    classes_count = 10
    mean, std = 0.1307, 0.3081
    mirrors: Sequence[str] = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    md5s = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    system_folders: Sequence[Path] = ()

    def __init__(
        self,
        data_dir: Optional[str] = None,
        augment: bool = True,
        seed: int = 42,
        download: bool = True,
        mirrors: Optional[Sequence[str]] = None,
        progress: bool = True,
        augmentation: Optional[str] = None,
    ):
        super().__init__(augment=augment, seed=seed, augmentation=augmentation)
        download, progress, mirrors = check_download_options(self.name, download, progress, mirrors, self.mirrors[0])
        self.raw_folder = resolve_data_root(data_dir) / self.folder_name / "raw"
        check_data_folder(self.raw_folder, f"The {self.name} folder {self.raw_folder}")
        files = ensure_idx_files(
            self.raw_folder,
            mirrors or self.mirrors,
            self.md5s,
            self.name,
            extra_folders=self.system_folders,
            download=download,
            progress=progress,
        )
        self._load_files(files)


@DatasetRegistry.register("fashion_mnist")
class FashionMNIST(MNIST):
    """Fashion-MNIST from ``<data root>/FashionMNIST/raw`` or Debian's
    ``dataset-fashion-mnist`` package, downloaded when missing."""

    name = "fashion_mnist"
    folder_name = "FashionMNIST"
    mean, std = 0.2860, 0.3530
    names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    md5s = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    system_folders = (Path("/usr/share/datasets/fashion-mnist"),)


@DatasetRegistry.register("mnist-sample")
class MNISTSample(IdxImageDataset):
    """5,000 real MNIST digits (4,000 train, 1,000 test) shipped inside the package.

    Needs no network. Source and licence: ``data/mnist_sample/README.md`` (CC BY-SA 3.0).
    ``data_dir`` is accepted for a uniform interface and ignored.
    """

    name = "mnist-sample"
    mean, std = 0.1307, 0.3081
    classes_count = 10

    def __init__(
        self,
        data_dir: Optional[str] = None,
        augment: bool = True,
        seed: int = 42,
        augmentation: Optional[str] = None,
        **_ignored,
    ):
        super().__init__(augment=augment, seed=seed, augmentation=augmentation)
        try:
            files = ensure_idx_files(SAMPLE_DIR, (), {}, self.name, download=False)
        except DataError:
            raise DataError(
                f"The bundled mnist-sample files are missing from {SAMPLE_DIR}; reinstall the package."
            ) from None
        self._load_files(files)
