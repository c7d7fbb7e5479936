"""Your own images as a dataset (config image_datasets, geovq.images): real PNG trees and .npz files
written here, read by the library and by the prepare_data stage; torchvision's ImageFolder as the
oracle of the folder reader; every bad input a one-line error naming the file, nothing written."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovq.config import validate
from geovq.data import UNLABELED, has_labels, synthetic
from geovq.images import load_splits, read_folder, read_npz, source_files, split_indices
from geovq.io import GeovqError, load_npz
from geovq.stages.data import prepare_data
from geovq.stages.runner import entry
from test_stage_errors import fails_cleanly, job

# synthetic class k (disc, square, cross) -> its folder: sorted, the folders give labels 1, 2, 0
FOLDERS = ["discs", "squares", "crosses"]
SORTED = sorted(FOLDERS)


def save_png(path, image, mode=None):
    """uint8 (C, H, W) as a PNG; ``mode`` "L" saves the grey level, "RGBA" adds an alpha channel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    if mode:
        img = img.convert(mode)
    img.save(path)


def image_tree(root, n=36, channels=3, size=16, seed=0, sizes=None):
    """An ImageFolder tree of ``n`` real PNGs of synthetic shapes (3 classes), some saved grey or with
    alpha, every fifth in a nested subfolder of its class; ``sizes`` cycles image sizes. Returns the
    images and their synthetic classes in file-writing order."""
    images, classes = synthetic(n, size=size, channels=channels, classes=3, seed=seed)
    for i, (img, c) in enumerate(zip(images, classes)):
        if sizes:
            s = sizes[i % len(sizes)]
            img = np.asarray(Image.fromarray(img[0] if channels == 1 else img.transpose(1, 2, 0)).resize((s, s)))
            img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        folder = Path(root) / FOLDERS[c] / ("more" if i % 5 == 0 else "")
        save_png(folder / f"img{i:03d}.png", img, {3: "RGBA", 5: "L"}.get(i % 7) if channels == 3 else None)
    return images, classes


def flat_folder(root, n=30, channels=1, size=16, seed=1):
    images, _ = synthetic(n, size=size, channels=channels, classes=4, seed=seed)
    for i, img in enumerate(images):
        save_png(Path(root) / f"shape_{i:03d}.png", img)
    return images


def spec(path, kind="folder", **over):
    """A validated image_datasets entry (defaults filled in as the config gives them)."""
    entry_ = {"kind": kind, "path": str(path), "channels": 3, **over}
    return validate({"datasets": ["mine"], "image_datasets": {"mine": entry_}})["image_datasets"]["mine"]


# ---------------------------------------------------------------- the folder reader
@pytest.mark.parametrize(
    "channels,size,sizes", [(3, None, None), (1, None, None), (3, 12, None), (1, 20, None), (3, 16, [16, 24, 20])]
)
def test_folder_reader_equals_torchvision_imagefolder(tmp_path, channels, size, sizes):
    """The same classes, samples in the same order with the same labels, the same pixels after the same
    conversion (torchvision's Grayscale and bilinear Resize of PIL images)."""
    from torchvision import datasets, transforms

    image_tree(tmp_path / "tree", sizes=sizes)
    images, labels, classes = read_folder(tmp_path / "tree", channels=channels, size=size)
    steps = [transforms.Grayscale()] if channels == 1 else []
    if size:
        steps.append(transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BILINEAR))
    ds = datasets.ImageFolder(str(tmp_path / "tree"), transform=transforms.Compose([*steps, transforms.PILToTensor()]))
    assert classes == ds.classes == SORTED
    assert labels.dtype == np.int64 and labels.tolist() == ds.targets
    expected = np.stack([ds[i][0].numpy() for i in range(len(ds))])
    assert images.dtype == np.uint8 and images.shape == (36, channels, size or 16, size or 16)
    np.testing.assert_array_equal(images, expected)


def test_folder_labels_are_the_sorted_class_folders(tmp_path):
    written, classes = image_tree(tmp_path / "tree", channels=1)
    images, labels, names = read_folder(tmp_path / "tree", channels=1)
    assert names == ["crosses", "discs", "squares"]
    # every written image is read back under its folder's label, pixel for pixel (PNG is lossless)
    by_bytes = {img.tobytes(): SORTED.index(FOLDERS[c]) for img, c in zip(written, classes)}
    assert len(by_bytes) == len(written) and [by_bytes[img.tobytes()] for img in images] == labels.tolist()
    assert sorted(labels.tolist()) == labels.tolist()  # class by class


def test_flat_folder_has_no_labels_and_sorted_files(tmp_path):
    written = flat_folder(tmp_path / "flat")
    (tmp_path / "flat" / ".DS_Store").write_bytes(b"\x00\x01")  # hidden files are skipped
    images, labels, classes = read_folder(tmp_path / "flat", channels=1)
    assert labels is None and classes is None
    np.testing.assert_array_equal(images, written)
    rgb, _, _ = read_folder(tmp_path / "flat", channels=3)
    assert rgb.shape == (30, 3, 16, 16) and (rgb == written).all()  # grey to RGB repeats the level


def test_jpeg_and_bmp_are_read_too(tmp_path):
    img = synthetic(1, size=16, channels=3, seed=2)[0][0].transpose(1, 2, 0)
    Image.fromarray(img).save(tmp_path / "a.bmp")
    Image.fromarray(img).save(tmp_path / "b.jpg", quality=95)
    images, _, _ = read_folder(tmp_path, channels=3)
    np.testing.assert_array_equal(images[0], img.transpose(2, 0, 1))  # BMP: lossless
    assert np.abs(images[1].astype(int) - img.transpose(2, 0, 1)).mean() < 8  # JPEG: close


# ---------------------------------------------------------------- the npz reader
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_npz_layouts_and_conversions(tmp_path, layout):
    x, y = synthetic(20, size=16, channels=3, classes=3, seed=3)
    stored = x if layout == "NCHW" else x.transpose(0, 2, 3, 1)
    np.savez(tmp_path / "d.npz", x=stored, y=y.astype(np.int32))
    images, labels = read_npz(tmp_path / "d.npz", channels=3)
    np.testing.assert_array_equal(images, x)
    assert labels.dtype == np.int64 and labels.tolist() == y.tolist()
    # the same conversions as a folder of the same images
    for i, img in enumerate(x):
        save_png(tmp_path / "png" / f"{i:02d}.png", img)
    for channels, size in ((1, None), (3, 12), (1, 24)):
        from_npz, _ = read_npz(tmp_path / "d.npz", channels=channels, size=size)
        from_pngs, _, _ = read_folder(tmp_path / "png", channels=channels, size=size)
        np.testing.assert_array_equal(from_npz, from_pngs)
    np.savez(tmp_path / "grey.npz", x=x[:, :1])
    images, labels = read_npz(tmp_path / "grey.npz", channels=3)
    assert labels is None and images.shape == (20, 3, 16, 16) and (images == x[:, :1]).all()


# ---------------------------------------------------------------- splits
def test_test_fraction_split_is_seeded_disjoint_and_complete(tmp_path):
    image_tree(tmp_path / "tree", n=40)
    everything, all_labels, _ = read_folder(tmp_path / "tree", channels=3)
    s = spec(tmp_path / "tree", test_fraction=0.25, split_seed=7)
    (splits, classes), (again, _) = load_splits("mine", s), load_splits("mine", s)
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    counts = np.bincount(all_labels)  # stratified: each class its share of a quarter, 10 in all
    held = np.bincount(test_y)
    assert held.sum() == 10 and (np.abs(held - counts / 4) < 1).all() and classes == SORTED
    assert len(train_x) + len(test_x) == 40
    for split in ("train", "test"):  # the same seed, the same split, bit for bit
        np.testing.assert_array_equal(splits[split][0], again[split][0])
        np.testing.assert_array_equal(splits[split][1], again[split][1])
    train_idx, test_idx = split_indices(40, 0.25, 7, all_labels)
    np.testing.assert_array_equal(train_x, everything[train_idx])
    np.testing.assert_array_equal(train_y, all_labels[train_idx])
    np.testing.assert_array_equal(test_x, everything[test_idx])
    np.testing.assert_array_equal(test_y, all_labels[test_idx])
    assert not set(train_idx) & set(test_idx) and sorted({*train_idx, *test_idx}) == list(range(40))
    other, _ = load_splits("mine", spec(tmp_path / "tree", test_fraction=0.25, split_seed=8))
    assert not np.array_equal(other["test"][0], test_x)
    default, _ = load_splits("mine", spec(tmp_path / "tree"))  # neither given: 0.2 held out
    held = np.bincount(default["test"][1])
    assert held.sum() == 8 and (np.abs(held - counts / 5) < 1).all()


def test_unlabeled_split_and_a_class_of_one_stays_in_training():
    train, test = split_indices(50, 0.2, 3)
    assert len(test) == 10 and sorted({*train, *test}) == list(range(50))
    labels = np.array([0] * 10 + [1] * 1 + [2] * 3)
    train, test = split_indices(14, 0.5, 0, labels)
    assert np.bincount(labels[test], minlength=3).tolist() == [5, 0, 2]  # round(1.5) = 2; the lone 1 trains


def test_test_path_classes_map_by_name(tmp_path):
    image_tree(tmp_path / "train")
    for i, c in enumerate(["squares", "discs"]):  # no crosses in the test set
        img = synthetic(1, size=16, channels=3, seed=10 + i)[0][0]
        save_png(tmp_path / "test" / c / "x.png", img)
    splits, classes = load_splits("mine", spec(tmp_path / "train", test_path=str(tmp_path / "test")))
    assert len(splits["train"][0]) == 36 and splits["test"][1].tolist() == [
        SORTED.index("discs"),
        SORTED.index("squares"),
    ]


# ---------------------------------------------------------------- the prepare_data stage
def prepare_job(tmp_path, name, image_dataset, **options):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return job(
        tmp_path,
        "prepare_data",
        {"images": source_files(image_dataset)},
        {"train": "out/train.npz", "test": "out/test.npz"},
        dataset=name,
        options={"channels": None, "subset_seed": 0, "train_subset": None, "test_subset": None, **options},
        data_dir="data",
        download=False,
        image_dataset=image_dataset,
    )


def test_prepare_data_stage_on_an_image_folder(tmp_path):
    image_tree(tmp_path / "tree", n=40)
    smk = prepare_job(tmp_path, "mine", spec(tmp_path / "tree", channels=1, size=12, test_fraction=0.25))
    entry(smk, prepare_data)
    train, test = load_npz(tmp_path / "out/train.npz"), load_npz(tmp_path / "out/test.npz")
    assert train["images"].shape == (30, 1, 12, 12) and test["images"].shape == (10, 1, 12, 12)
    assert train["images"].dtype == test["images"].dtype == np.uint8 and train["labels"].dtype == np.int64
    assert has_labels(train["labels"]) and set(train["labels"]) <= {0, 1, 2}
    log = Path(smk.log[0]).read_text()
    assert "classes (labels 0..2, sorted folder names): ['crosses', 'discs', 'squares']" in log
    assert "train: images (30, 1, 12, 12) labels [" in log


def test_prepare_data_stage_on_a_flat_folder_and_an_npz(tmp_path):
    flat_folder(tmp_path / "flat", n=30)
    smk = prepare_job(tmp_path / "a", "flat", spec(tmp_path / "flat", channels=1, test_fraction=0.2), train_subset=20)
    entry(smk, prepare_data)
    train = load_npz(tmp_path / "a/out/train.npz")
    assert train["images"].shape == (20, 1, 16, 16) and (train["labels"] == UNLABELED).all()
    assert not has_labels(train["labels"]) and len(load_npz(tmp_path / "a/out/test.npz")["images"]) == 6
    assert "labels none (unlabeled dataset)" in Path(smk.log[0]).read_text()

    x, y = synthetic(25, size=16, channels=3, classes=3, seed=4)
    np.savez(tmp_path / "d.npz", x=x.transpose(0, 2, 3, 1), y=y)
    np.savez(tmp_path / "t.npz", x=x[:5], y=y[:5])
    entry(
        prepare_job(tmp_path / "b", "arrays", spec(tmp_path / "d.npz", "npz", test_path=str(tmp_path / "t.npz"))),
        prepare_data,
    )
    train, test = load_npz(tmp_path / "b/out/train.npz"), load_npz(tmp_path / "b/out/test.npz")
    np.testing.assert_array_equal(train["images"], x)
    assert train["labels"].tolist() == y.tolist() and test["images"].shape == (5, 3, 16, 16)


def test_source_files_are_every_visible_file(tmp_path):
    image_tree(tmp_path / "tree", n=12)
    (tmp_path / "tree" / ".hidden").mkdir()
    (tmp_path / "tree" / ".hidden" / "x.png").write_bytes(b"")
    files = source_files(spec(tmp_path / "tree", test_path=str(tmp_path / "t.npz")))
    assert len(files) == 12 and all(f.endswith(".png") and "/.hidden/" not in f for f in files)
    np.savez(tmp_path / "t.npz", x=np.zeros((2, 1, 8, 8), np.uint8))
    files = source_files(spec(tmp_path / "tree", test_path=str(tmp_path / "t.npz")))
    assert len(files) == 13 and str(tmp_path / "t.npz") in files
    assert source_files(spec(tmp_path / "missing")) == []


# ---------------------------------------------------------------- bad input: one line, nothing written
def _bad_folder(tmp_path, what):
    root = tmp_path / "imgs"
    if what == "mixed sizes":
        image_tree(root, n=10, sizes=[16, 20])
        return root, {}, " pixels, but ", "; set image_datasets.mine.size to resize every image"
    if what == "not square":
        flat_folder(root, n=3)
        save_png(root / "wide.png", np.zeros((1, 16, 20), np.uint8))
        return root, {}, "wide.png: 20x16 pixels, not square", "image_datasets.mine.size"
    if what == "empty folder":
        root.mkdir()
        return root, {}, "imgs: empty folder", ""
    if what == "empty class folder":
        image_tree(root, n=10)
        (root / "zebras").mkdir()
        return root, {}, "zebras: class folder holds no images", ""
    if what == "non-image files":
        flat_folder(root, n=3)
        (root / "notes.txt").write_text("x")
        (root / "readme.md").write_text("x")
        return root, {}, "notes.txt: not an image file (extension .txt", ""
    if what == "corrupt image":
        image_tree(root, n=10)
        (root / "discs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        return root, {}, "broken.png: not a readable image", ""
    if what == "file beside classes":
        image_tree(root, n=10)
        save_png(root / "stray.png", np.zeros((3, 16, 16), np.uint8))
        return root, {}, "stray.png: a file beside the class folders", ""
    if what == "missing folder":
        return root, {}, "imgs: folder not found", ""
    if what == "labels on one side only":
        image_tree(root, n=10)
        flat_folder(tmp_path / "test", n=3)
        return root, {"test_path": str(tmp_path / "test")}, "test: no labels, but", ""
    if what == "unknown test class":
        image_tree(root, n=10)
        save_png(tmp_path / "test" / "zebras" / "z.png", np.zeros((3, 16, 16), np.uint8))
        return root, {"test_path": str(tmp_path / "test")}, "zebras: a class folder that", ""
    if what == "too few images":
        flat_folder(root, n=1)
        return root, {"test_fraction": 0.3}, "1 images leave 1 train and 0 test images", ""
    raise AssertionError(what)


FOLDER_ERRORS = [
    "mixed sizes",
    "not square",
    "empty folder",
    "empty class folder",
    "non-image files",
    "corrupt image",
    "file beside classes",
    "missing folder",
    "labels on one side only",
    "unknown test class",
    "too few images",
]


@pytest.mark.parametrize("what", FOLDER_ERRORS)
def test_bad_folder_is_one_line_naming_the_file(tmp_path, capsys, what):
    root, over, *needles = _bad_folder(tmp_path, what)
    smk = prepare_job(tmp_path, "mine", spec(root, **over))
    err = fails_cleanly(smk, prepare_data, capsys, "dataset 'mine': ", *needles)
    assert "readme.md" not in err  # the first bad file only


def _bad_npz(tmp_path, what):
    x = np.zeros((6, 3, 16, 16), np.uint8)
    arrays = {
        "float images": dict(x=x.astype(np.float32)),
        "3-d images": dict(x=x[:, 0]),
        "5 channels": dict(x=np.zeros((6, 5, 16, 16), np.uint8)),
        "no x": dict(images=x),
        "short y": dict(x=x, y=np.arange(5)),
        "float y": dict(x=x, y=np.zeros(6)),
        "negative y": dict(x=x, y=np.full(6, -1)),
        "not square": dict(x=np.zeros((6, 3, 16, 20), np.uint8)),
    }[what]
    np.savez(tmp_path / "d.npz", **arrays)
    return {
        "float images": "array 'x' has dtype float32; expected uint8 (N, C, H, W) or (N, H, W, C)",
        "3-d images": "array 'x' has shape (6, 16, 16); expected uint8",
        "5 channels": "array 'x' has shape (6, 5, 16, 16)",
        "no x": "no array 'x' (has ['images'])",
        "short y": "array 'y' has shape (5,); expected (6,)",
        "float y": "array 'y' has dtype float64; expected integer labels",
        "negative y": "array 'y' holds the label -1; expected labels >= 0",
        "not square": "array 'x': 20x16 pixels, not square; set image_datasets.mine.size",
    }[what]


@pytest.mark.parametrize(
    "what", ["float images", "3-d images", "5 channels", "no x", "short y", "float y", "negative y", "not square"]
)
def test_bad_npz_is_one_line_naming_the_key_and_shape(tmp_path, capsys, what):
    needle = _bad_npz(tmp_path, what)
    smk = prepare_job(tmp_path, "mine", spec(tmp_path / "d.npz", "npz"))
    fails_cleanly(smk, prepare_data, capsys, f"dataset 'mine': {tmp_path / 'd.npz'}: {needle}")


def test_a_bad_test_file_writes_no_train_file_either(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 1, 16, 16), np.uint8))
    np.savez(tmp_path / "t.npz", x=np.zeros((6, 1, 16, 16), np.float64))
    smk = prepare_job(tmp_path, "mine", spec(tmp_path / "d.npz", "npz", test_path=str(tmp_path / "t.npz")))
    fails_cleanly(smk, prepare_data, capsys, "t.npz: array 'x' has dtype float64")  # train.npz neither


def test_library_errors_name_the_file_alone():
    with pytest.raises(GeovqError) as e:
        read_npz("/nonexistent/d.npz", channels=1)
    assert str(e.value) == "/nonexistent/d.npz: file not found"
    with pytest.raises(GeovqError, match="^/nonexistent: folder not found$"):
        read_folder("/nonexistent", channels=1)
