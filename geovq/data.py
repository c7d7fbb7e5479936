"""Datasets: locate standard files, read them through torchvision, write one uint8 file per split.

The prepared file (``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)) is all later stages
read, so they never depend on torchvision internals or on where the raw files were found. A
dataset without labels (your own images, config ``image_datasets``, geovq.images) has every label
``UNLABELED`` (-1, as torchvision's STL10 marks its unlabelled split); ``has_labels`` tells.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import numpy as np

from geovq.io import GeovqError, load_npz, save_npz

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# dataset name -> (torchvision class name, extra directory names people use for it)
IDX_DATASETS = {
    "mnist": ("MNIST", ["mnist"]),
    "fashionmnist": ("FashionMNIST", ["fashionmnist", "fashion-mnist", "fashion_mnist"]),
}
# Debian's dataset-fashion-mnist package installs the four .gz files here.
SYSTEM_DIRS = {"fashionmnist": [Path("/usr/share/datasets/fashion-mnist")]}
CIFAR_DIR = "cifar-10-batches-py"
DATASETS = ("synthetic", "mnist", "fashionmnist", "cifar10")  # built in; more under config image_datasets
CHANNELS = {"mnist": 1, "fashionmnist": 1, "cifar10": 3}
UNLABELED = -1  # the label of every image of a dataset without labels


def has_labels(labels) -> bool:
    """Whether a prepared split's ``labels`` are class labels (else the dataset has none: UNLABELED)."""
    labels = np.asarray(labels)
    return bool(len(labels)) and not bool((labels == UNLABELED).any())


def _idx_file(folder: Path, name: str) -> Path | None:
    for cand in (folder / name, folder / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


def _idx_candidates(name, data_dir, system_dirs):
    cls, aliases = IDX_DATASETS[name]
    data_dir = Path(data_dir)
    dirs = [data_dir / cls / "raw", *(data_dir / a for a in aliases), data_dir]
    return dirs + list(system_dirs)


def find_idx_dir(name, data_dir, system_dirs=None):
    """First folder holding all four idx files (plain or .gz) of ``name``; (folder, looked-in)."""
    system_dirs = SYSTEM_DIRS.get(name, []) if system_dirs is None else system_dirs
    looked = _idx_candidates(name, data_dir, system_dirs)
    for d in looked:
        if all(_idx_file(d, f) for pair in IDX_FILES.values() for f in pair):
            return d, looked
    return None, looked


def _read_idx_split(name, folder: Path, split: str):
    """Read one split through torchvision's MNIST/FashionMNIST class from a staged raw folder."""
    import torchvision.datasets as tvd

    cls_name = IDX_DATASETS[name][0]
    with tempfile.TemporaryDirectory(prefix="geovq-idx-") as root:
        raw = Path(root) / cls_name / "raw"
        raw.mkdir(parents=True)
        for pair in IDX_FILES.values():  # torchvision checks that all four exist
            for f in pair:
                src = _idx_file(folder, f)
                try:
                    if src.suffix == ".gz":
                        with gzip.open(src, "rb") as fin, open(raw / f, "wb") as fout:
                            shutil.copyfileobj(fin, fout)
                    else:
                        (raw / f).symlink_to(src.resolve())
                except (OSError, EOFError, gzip.BadGzipFile) as e:
                    raise GeovqError(f"{src}: corrupt or unreadable ({e})") from None
        try:
            ds = getattr(tvd, cls_name)(root, train=(split == "train"), download=False)
            images = ds.data.numpy()
            labels = ds.targets.numpy()
        except (AssertionError, RuntimeError, ValueError) as e:
            files = [str(_idx_file(folder, f)) for f in IDX_FILES[split]]
            raise GeovqError(
                f"{files[0]}: not a valid idx file pair with {files[1]} ({type(e).__name__} {e})"
            ) from None
    if images.ndim != 3 or len(images) != len(labels):
        raise GeovqError(f"{folder}: {split} images {images.shape} and labels {labels.shape} disagree")
    return images[:, None].astype(np.uint8), labels.astype(np.int64)


def _find_cifar_dir(data_dir):
    data_dir = Path(data_dir)
    looked = [data_dir / CIFAR_DIR, data_dir / "cifar10" / CIFAR_DIR, data_dir / "cifar-10" / CIFAR_DIR]
    for d in looked:
        if (d / "test_batch").is_file() and (d / "data_batch_1").is_file():
            return d, looked
    return None, looked


def _read_cifar_split(folder: Path, split: str):
    """Read CIFAR-10 python pickles through torchvision's CIFAR10 class.

    torchvision checks every batch against the official MD5 sums; we skip that (so copies
    re-pickled elsewhere still load) and check shapes and labels ourselves instead.
    """
    import torchvision.datasets as tvd

    class _CIFAR10(tvd.CIFAR10):
        def _check_integrity(self):
            return True

        def _load_meta(self):  # class names are not needed; batches.meta may be absent
            self.classes, self.class_to_idx = [], {}

    try:
        ds = _CIFAR10(str(folder.parent), train=(split == "train"), download=False)
    except FileNotFoundError as e:
        raise GeovqError(f"{e.filename}: CIFAR-10 batch file missing") from None
    except Exception as e:
        raise GeovqError(f"{folder}: corrupt CIFAR-10 batch files ({type(e).__name__}: {e})") from None
    images = np.asarray(ds.data)
    labels = np.asarray(ds.targets, dtype=np.int64)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) != len(labels):
        raise GeovqError(f"{folder}: expected CIFAR-10 images (N, 32, 32, 3), got {images.shape}")
    return images.transpose(0, 3, 1, 2).copy(), labels


def _download(name, data_dir):
    import torchvision.datasets as tvd

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    cls = {"mnist": tvd.MNIST, "fashionmnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    for train in (True, False):
        cls(str(data_dir), train=train, download=True)


def synthetic(n: int, *, size: int = 16, channels: int = 1, classes: int = 4, seed: int = 0):
    """Procedural shapes (disc, square, cross, ring, bars, triangle), one class each.

    Position, scale, intensity (and colour for 3 channels) vary per image; pixel noise is
    added; everything is drawn from ``np.random.default_rng(seed)``, so the set is
    reproducible bit for bit.
    """
    if not 1 <= classes <= 6:
        raise ValueError(f"synthetic classes={classes}: expected 1..6")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    labels = rng.integers(0, classes, n)
    images = np.empty((n, channels, size, size), np.uint8)
    for i, c in enumerate(labels):
        cx, cy = rng.uniform(0.35, 0.65, 2) * size
        r = rng.uniform(0.18, 0.32) * size
        dx, dy = xx - cx, yy - cy
        shape = {
            0: dx**2 + dy**2 <= r**2,
            1: (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r),
            2: ((np.abs(dx) <= 0.25 * r) | (np.abs(dy) <= 0.25 * r)) & (np.abs(dx) <= r) & (np.abs(dy) <= r),
            3: np.abs(np.sqrt(dx**2 + dy**2) - 0.75 * r) <= 0.25 * r,
            4: (np.abs(dy) <= 0.3 * r) & (np.abs(dx) <= 1.1 * r),
            5: (dy <= 0.8 * r) & (dy >= -0.8 * r) & (np.abs(dx) <= (dy + 0.8 * r) * 0.6),
        }[int(c)].astype(np.float32)
        colour = rng.uniform(0.6, 1.0, channels).astype(np.float32)
        img = shape[None] * colour[:, None, None] + rng.normal(0, 0.05, (channels, size, size))
        images[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def load_raw(name: str, split: str, *, data_dir="data", download=False, options=None, system_dirs=None):
    """Images (N, C, H, W) uint8 and labels (N,) int64 of one split of a dataset."""
    options = options or {}
    if name == "synthetic":
        n = options.get("n_train", 2000) if split == "train" else options.get("n_test", 500)
        seed = options.get("seed", 0) + (0 if split == "train" else 1)  # disjoint draws per split
        return synthetic(
            n,
            size=options.get("size", 16),
            channels=options.get("channels") or 1,  # null: grey
            classes=options.get("classes", 4),
            seed=seed,
        )
    if name in IDX_DATASETS:
        folder, looked = find_idx_dir(name, data_dir, system_dirs)
        if folder is None and download:
            _try_download(name, data_dir, looked)
            folder, looked = find_idx_dir(name, data_dir, system_dirs)
        if folder is None:
            raise GeovqError(_missing(name, looked, download))
        return _read_idx_split(name, folder, split)
    if name == "cifar10":
        folder, looked = _find_cifar_dir(data_dir)
        if folder is None and download:
            _try_download(name, data_dir, looked)
            folder, looked = _find_cifar_dir(data_dir)
        if folder is None:
            raise GeovqError(_missing(name, looked, download))
        return _read_cifar_split(folder, split)
    raise GeovqError(
        f"config key 'datasets': unknown dataset {name!r}; expected one of {list(DATASETS)} "
        "or a name declared under config key 'image_datasets'"
    )


def _missing(name, looked, download):
    how = "download failed or found nothing" if download else "download is off (config key 'download')"
    return f"dataset {name!r}: files not found; looked in {', '.join(map(str, looked))}; {how}"


def _try_download(name, data_dir, looked):
    try:
        _download(name, data_dir)
    except Exception as e:  # no network: report it with where we looked
        raise GeovqError(
            f"dataset {name!r}: files not found in {', '.join(map(str, looked))} and download failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def subset_indices(n: int, size, seed: int) -> np.ndarray:
    """Seeded, sorted subset of range(n) of ``size`` (None or >= n: everything)."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def load_splits(name, *, data_dir="data", download=False, options=None, system_dirs=None, image_dataset=None):
    """({"train": (images, labels), "test": (...)}, class names or None) of a dataset, both splits read
    before anything is written. ``image_dataset``: the config ``image_datasets.<name>`` entry of a
    dataset of your own images (geovq.images); labels are then UNLABELED where it has none."""
    if image_dataset is not None:
        from geovq.images import load_splits as load_images

        splits, classes = load_images(name, image_dataset)
        return {
            s: (x, np.full(len(x), UNLABELED, np.int64) if y is None else y) for s, (x, y) in splits.items()
        }, classes
    read = dict(data_dir=data_dir, download=download, options=options, system_dirs=system_dirs)
    return {split: load_raw(name, split, **read) for split in ("train", "test")}, None


def prepare(
    name,
    out_train,
    out_test,
    *,
    data_dir="data",
    download=False,
    options=None,
    expected_channels=None,
    system_dirs=None,
    image_dataset=None,
):
    """Write the prepared train and test files of a dataset (optionally seeded subsets); return its
    class names where the dataset names them (an image folder's), else None. Both splits are read
    and checked before either file is written."""
    options = options or {}
    splits, classes = load_splits(
        name,
        data_dir=data_dir,
        download=download,
        options=options,
        system_dirs=system_dirs,
        image_dataset=image_dataset,
    )
    for images, _ in splits.values():
        if expected_channels is not None and images.shape[1] != expected_channels:
            raise GeovqError(
                f"dataset {name!r}: images have {images.shape[1]} channels, config expects {expected_channels}"
            )
    for split, out in (("train", out_train), ("test", out_test)):
        images, labels = splits[split]
        keep = subset_indices(len(images), options.get(f"{split}_subset"), options.get("subset_seed", 0))
        save_npz(out, images=images[keep], labels=labels[keep])
    return classes


def load_prepared(path):
    """(images float32 in [0, 1] as a torch tensor (N, C, H, W), labels int64 tensor)."""
    import torch

    d = load_npz(path, keys=("images", "labels"))
    images, labels = d["images"], d["labels"]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise GeovqError(f"{path}: expected uint8 images (N, C, H, W), got {images.dtype} {images.shape}")
    return torch.from_numpy(images).float().div_(255.0), torch.from_numpy(labels)
