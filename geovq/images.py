"""Your own images as a dataset (config ``image_datasets``): a folder of image files or an .npz of arrays,
read into uint8 images (N, C, H, W) and integer labels, or no labels, split into train and test.

Kinds (``spec["kind"]``):

- ``folder``: a torchvision ``ImageFolder`` tree, one subfolder per class (labels 0.. in the sorted
  order of the class folder names; within a class, files in the order of ``sorted(os.walk(...))`` and
  sorted names, as torchvision lists them), or a flat folder of image files (no labels). Hidden files
  and folders (names starting with ``.``) are skipped; any other file must be an image Pillow reads.
- ``npz``: array ``x`` uint8 (N, C, H, W) or (N, H, W, C) with C 1 or 3, optional ``y`` (N,) integer
  labels >= 0.

Every image is converted to ``spec["channels"]`` (1: Pillow's ``L``, 3: ``RGB``; a folder's images
through ``RGB`` first, as torchvision's loader opens them) and, with ``spec["size"]``, resized to
size x size (bilinear); without it every image must be square and of one size. The test split is the
``test_path`` (same kind and layout) or a seeded ``test_fraction`` of the images (``split_seed``;
stratified by class where there are labels).

Errors are one-line GeovqErrors naming the file and what was expected; nothing here writes a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from geovq.io import GeovqError

KINDS = ("folder", "npz")
DEFAULT_TEST_FRACTION = 0.2  # config: when an image dataset gives neither test_path nor test_fraction


def _visible(name: str) -> bool:
    return not name.startswith(".")


def image_extensions() -> set[str]:
    """File name extensions (lower case, with the dot) of the formats Pillow can open."""
    from PIL import Image

    Image.init()
    return {ext for ext, fmt in Image.EXTENSION.items() if fmt in Image.OPEN}


def source_files(spec) -> list[str]:
    """Every file an image dataset's reader looks at (hidden ones aside), sorted; [] for a missing path.

    The rule that prepares the dataset takes them as inputs: adding, removing or editing one reruns it."""
    files = []
    for key in ("path", "test_path"):
        root = spec.get(key)
        if not root:
            continue
        root = Path(root)
        if root.is_file():
            files.append(str(root))
        elif root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                dirnames[:] = [d for d in dirnames if _visible(d)]
                files += [os.path.join(dirpath, f) for f in filenames if _visible(f)]
    return sorted(files)


# ---------------------------------------------------------------- folder
def _folder_layout(root: Path):
    """(class names or None, [(file, class index or None)]) of a folder in the order torchvision lists it."""
    if not root.is_dir():
        raise GeovqError(f"{root}: {'not a folder' if root.exists() else 'folder not found'}")
    entries = sorted((e for e in os.scandir(root) if _visible(e.name)), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir()]
    loose = [e.path for e in entries if not e.is_dir()]
    if not classes:
        if not loose:
            raise GeovqError(f"{root}: empty folder; expected image files, or one subfolder of images per class")
        return None, [(f, None) for f in loose]
    if loose:
        raise GeovqError(
            f"{loose[0]}: a file beside the class folders {classes[:3]}{'...' if len(classes) > 3 else ''}; "
            f"expected either one subfolder per class or a flat folder of images"
        )
    samples = []
    for index, name in enumerate(classes):
        found = []
        for dirpath, _, filenames in sorted(os.walk(root / name, followlinks=True)):
            if any(not _visible(p) for p in Path(dirpath).relative_to(root).parts):
                continue
            found += [(os.path.join(dirpath, f), index) for f in sorted(filenames) if _visible(f)]
        if not found:
            raise GeovqError(f"{root / name}: class folder holds no images")
        samples += found
    return classes, samples


def _check_extensions(files):
    exts = image_extensions()
    for f in files:
        ext = os.path.splitext(f)[1].lower()
        if ext not in exts:
            raise GeovqError(
                f"{f}: not an image file ({'extension ' + ext if ext else 'no extension'}; images are files "
                f"Pillow opens: .png, .jpg, .jpeg, .bmp, .gif, .tif, .webp, ...)"
            )


def _convert(img, channels: int, size):
    """A Pillow image as uint8 (C, H, W): ``channels`` 1 (L) or 3 (RGB), resized to size x size if given."""
    from PIL import Image

    img = img.convert("RGB")  # what torchvision's default loader does, then ours
    if channels == 1:
        img = img.convert("L")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _shape_check(path, width, height, first, size_key):
    """Without a size: every image square and of the first image's size."""
    fix = f"set {size_key} to resize every image to size x size"
    if width != height:
        raise GeovqError(f"{path}: {width}x{height} pixels, not square; {fix}")
    if first is not None and (width, height) != first[1]:
        raise GeovqError(f"{path}: {width}x{height} pixels, but {first[0]} is {first[1][0]}x{first[1][1]}; {fix}")


def read_folder(root, *, channels: int, size=None, size_key="size"):
    """(images uint8 (N, C, H, W), labels int64 (N,) or None, class names or None) of an image folder.

    ``size_key``: the config key an error about image sizes points to (``image_datasets.<name>.size``)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    classes, samples = _folder_layout(root)
    files = [f for f, _ in samples]
    _check_extensions(files)
    images, first = None, None
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                if size is None:
                    _shape_check(f, *img.size, first, size_key)
                    first = first or (f, img.size)
                a = _convert(img, channels, size)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise GeovqError(f"{f}: not a readable image ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        if images is None:
            images = np.empty((len(files), *a.shape), np.uint8)
        images[i] = a
    labels = None if classes is None else np.array([c for _, c in samples], np.int64)
    return images, labels, classes


# ---------------------------------------------------------------- npz
def read_npz(path, *, channels: int, size=None, size_key="size"):
    """(images uint8 (N, C, H, W), labels int64 (N,) or None) of an .npz holding ``x`` and optional ``y``."""
    path = Path(path)
    if not path.is_file():
        raise GeovqError(f"{path}: {'not a file' if path.exists() else 'file not found'}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k in ("x", "y")}
            names = sorted(f.files)
    except Exception as e:
        raise GeovqError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if "x" not in arrays:
        raise GeovqError(
            f"{path}: no array 'x' (has {names}); expected x uint8 (N, C, H, W) or (N, H, W, C) and optional y"
        )
    x = arrays["x"]
    expected = "expected uint8 (N, C, H, W) or (N, H, W, C) with C 1 or 3"
    if x.dtype != np.uint8:
        raise GeovqError(f"{path}: array 'x' has dtype {x.dtype}; {expected}")
    if x.ndim != 4 or len(x) == 0 or (x.shape[1] not in (1, 3) and x.shape[3] not in (1, 3)):
        raise GeovqError(f"{path}: array 'x' has shape {x.shape}; {expected}, N >= 1")
    if x.shape[1] not in (1, 3):  # channels last
        x = x.transpose(0, 3, 1, 2)
    labels = None
    if "y" in arrays:
        y = arrays["y"]
        if y.ndim != 1 or len(y) != len(x):
            raise GeovqError(f"{path}: array 'y' has shape {y.shape}; expected ({len(x)},), one label per image")
        if not np.issubdtype(y.dtype, np.integer):
            raise GeovqError(f"{path}: array 'y' has dtype {y.dtype}; expected integer labels")
        if len(y) and y.min() < 0:
            raise GeovqError(f"{path}: array 'y' holds the label {int(y.min())}; expected labels >= 0")
        labels = y.astype(np.int64)
    return _as_configured(x, path, channels, size, size_key), labels


def _as_configured(x, path, channels, size, size_key):
    """uint8 (N, C, H, W) converted to ``channels`` and resized to ``size`` as a folder's images are."""
    _, c, h, w = x.shape
    if size is None:
        _shape_check(f"{path}: array 'x'", w, h, None, size_key)
    if size is None or (h, w) == (size, size):  # no resampling: the same as Pillow's conversions
        if c == channels:
            return np.ascontiguousarray(x)
        if c == 1:  # L -> RGB repeats the grey level
            return np.repeat(x, 3, axis=1)
    from PIL import Image

    out = np.empty((len(x), channels, *((size, size) if size else (h, w))), np.uint8)
    for i, img in enumerate(x):
        out[i] = _convert(Image.fromarray(img[0] if c == 1 else img.transpose(1, 2, 0)), channels, size)
    return out


# ---------------------------------------------------------------- splits
def split_indices(n: int, test_fraction: float, seed: int, labels=None):
    """Seeded disjoint (train, test) index arrays of range(n), each sorted: round(n x fraction) test images,
    or with ``labels`` (n,) stratified: the same total, each class c its share n_c x fraction rounded
    by largest remainders, but at least one of its images left for training (the priors and the
    classifier know only the classes they trained on)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        perm = rng.permutation(n)
        n_test = int(round(n * test_fraction))
        return np.sort(perm[n_test:]), np.sort(perm[:n_test])
    labels = np.asarray(labels)
    classes, sizes = np.unique(labels, return_counts=True)
    # round(n x fraction) in all, shared by the largest remainders of the classes' exact shares
    share = sizes * test_fraction
    n_test = np.minimum(np.floor(share).astype(np.int64), sizes - 1)
    extra = int(round(n * test_fraction)) - int(n_test.sum())
    for c in np.argsort(-(share - np.floor(share)), kind="stable"):
        if extra > 0 and n_test[c] < sizes[c] - 1:
            n_test[c] += 1
            extra -= 1
    train, test = [], []
    for c, k in zip(classes, n_test):
        members = rng.permutation(np.flatnonzero(labels == c))
        train.append(members[k:])
        test.append(members[:k])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _read(path, spec, key):
    options = dict(channels=spec["channels"], size=spec.get("size"), size_key=f"{key}.size")
    if spec["kind"] == "folder":
        return read_folder(path, **options)
    if spec["kind"] == "npz":
        return (*read_npz(path, **options), None)
    raise GeovqError(f"config key '{key}.kind': unknown kind {spec['kind']!r}; expected one of {list(KINDS)}")


def load_splits(name: str, spec: dict):
    """({"train": (images, labels or None), "test": (...)}, class names of a folder or None) of the image
    dataset ``name`` declared as ``spec`` (config ``image_datasets.<name>``). Errors start with the dataset."""
    try:
        return _load_splits(spec, f"image_datasets.{name}")
    except GeovqError as e:
        raise GeovqError(f"dataset {name!r}: {e}") from None


def _load_splits(spec, key):
    images, labels, classes = _read(spec["path"], spec, key)
    if spec.get("test_path"):
        test_images, test_labels, test_classes = _read(spec["test_path"], spec, key)
        if (labels is None) != (test_labels is None):
            has, lacks = (spec["path"], spec["test_path"]) if labels is not None else (spec["test_path"], spec["path"])
            raise GeovqError(f"{lacks}: no labels, but {has} has them; give both splits labels or neither")
        if test_images.shape[1:] != images.shape[1:]:
            raise GeovqError(
                f"{spec['test_path']}: images {test_images.shape[1:]} but {spec['path']} has {images.shape[1:]}; "
                f"set {key}.size to resize both"
            )
        if classes is not None:
            unknown = sorted(set(test_classes) - set(classes))
            if unknown:
                raise GeovqError(
                    f"{Path(spec['test_path']) / unknown[0]}: a class folder that {spec['path']} lacks "
                    f"(its classes: {classes})"
                )
            test_labels = np.array([classes.index(test_classes[i]) for i in test_labels], np.int64)
        return {"train": (images, labels), "test": (test_images, test_labels)}, classes
    fraction = spec.get("test_fraction")
    fraction = DEFAULT_TEST_FRACTION if fraction is None else fraction
    train, test = split_indices(len(images), fraction, spec.get("split_seed", 0), labels)
    if not len(train) or not len(test):
        raise GeovqError(
            f"{spec['path']}: {len(images)} images leave {len(train)} train and {len(test)} test images at "
            f"test_fraction {fraction:g}; expected at least one of each"
        )
    return {
        split: (images[idx], None if labels is None else labels[idx])
        for split, idx in (("train", train), ("test", test))
    }, classes
