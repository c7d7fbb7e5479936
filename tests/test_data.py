"""Loaders read idx (MNIST/Fashion) and CIFAR-10 pickle files written here in the real formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from geovq.data import find_idx_dir, load_prepared, load_raw, prepare, synthetic
from geovq.io import GeovqError, atomic_path


def write_idx(path, array, compress):
    """The idx format: magic (0, 0, type 0x08 = uint8, ndim), big-endian dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_dataset(folder, n_train=20, n_test=10, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte", x, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte", y, compress)
        arrays[split] = (x, y)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("name,layout", [("fashionmnist", "FashionMNIST/raw"), ("mnist", "mnist")])
def test_idx_roundtrip(tmp_path, name, layout, compress):
    arrays = make_idx_dataset(tmp_path / layout, compress=compress)
    for split, key in (("train", "train"), ("test", "t10k")):
        images, labels = load_raw(name, split, data_dir=tmp_path, system_dirs=[])
        assert images.shape == (len(arrays[key][0]), 1, 28, 28) and images.dtype == np.uint8
        np.testing.assert_array_equal(images[:, 0], arrays[key][0])
        np.testing.assert_array_equal(labels, arrays[key][1])


def test_system_dir_is_searched_after_data_dir(tmp_path):
    make_idx_dataset(tmp_path / "system", seed=1)
    folder, looked = find_idx_dir("fashionmnist", tmp_path / "data", system_dirs=[tmp_path / "system"])
    assert folder == tmp_path / "system" and looked[-1] == tmp_path / "system"
    make_idx_dataset(tmp_path / "data" / "fashion-mnist", seed=2)
    folder, _ = find_idx_dir("fashionmnist", tmp_path / "data", system_dirs=[tmp_path / "system"])
    assert folder == tmp_path / "data" / "fashion-mnist"


def test_missing_dataset_names_every_place(tmp_path):
    with pytest.raises(GeovqError) as e:
        load_raw("mnist", "train", data_dir=tmp_path, system_dirs=[tmp_path / "elsewhere"])
    msg = str(e.value)
    assert "\n" not in msg and "'mnist'" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg and str(tmp_path / "elsewhere") in msg


def test_corrupt_idx_file_is_named(tmp_path):
    folder = tmp_path / "mnist"
    make_idx_dataset(folder, compress=False)
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(GeovqError, match="train-images-idx3-ubyte"):
        load_raw("mnist", "train", data_dir=tmp_path, system_dirs=[])


def write_cifar(folder, seed=0, per_batch=6, n_test=5):
    """CIFAR-10's python pickles: five train batches of ``per_batch`` random images, a test batch."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    out = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)  # str keys, as Python 2 wrote them
        out[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return out


def test_cifar_pickles(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    images, labels = load_raw("cifar10", "train", data_dir=tmp_path)
    assert images.shape == (30, 3, 32, 32) and images.dtype == np.uint8
    data, lab = batches["data_batch_1"]
    np.testing.assert_array_equal(images[:6], data.reshape(6, 3, 32, 32))
    assert labels[:6].tolist() == lab
    test_images, test_labels = load_raw("cifar10", "test", data_dir=tmp_path)
    assert test_images.shape == (5, 3, 32, 32) and test_labels.tolist() == batches["test_batch"][1]


def test_cifar_corrupt(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(GeovqError, match="cifar-10-batches-py"):
        load_raw("cifar10", "train", data_dir=tmp_path)


def test_synthetic_deterministic_and_labelled():
    a, la = synthetic(50, size=16, channels=3, classes=5, seed=3)
    b, lb = synthetic(50, size=16, channels=3, classes=5, seed=3)
    c, _ = synthetic(50, size=16, channels=3, classes=5, seed=4)
    assert a.shape == (50, 3, 16, 16) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert set(la.tolist()) == set(range(5))
    # classes differ in content: mean images of two classes are far apart
    m0, m1 = a[la == 0].mean(0), a[la == 1].mean(0)
    assert np.abs(m0 - m1).mean() > 5


@pytest.mark.parametrize("n_train,n_test", [(100, 100), (200, 60)])
def test_synthetic_train_and_test_splits_differ_and_options_reproduce_them(tmp_path, n_train, n_test):
    opts = {"n_train": n_train, "n_test": n_test, "size": 16, "channels": 1, "classes": 4}
    train, _ = load_raw("synthetic", "train", options=opts)
    test, _ = load_raw("synthetic", "test", options=opts)
    assert not np.array_equal(train[: len(test)], test[: len(train)])
    # no test image is a train image: not byte for byte, not nearly (pixel noise alone differs by ~10 / 255)
    assert not {x.tobytes() for x in train} & {x.tobytes() for x in test}
    diff = np.abs(test.reshape(len(test), 1, -1).astype(np.int16) - train.reshape(1, len(train), -1)).mean(-1)
    assert diff.min() > 5
    # the same options give the same data, through the prepared files too
    for d in ("a", "b"):
        prepare("synthetic", tmp_path / d / "train.npz", tmp_path / d / "test.npz", options=opts)
    for split, raw in (("train", train), ("test", test)):
        (xa, ya), (xb, yb) = (load_prepared(tmp_path / d / f"{split}.npz") for d in ("a", "b"))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        np.testing.assert_array_equal((xa * 255).round().byte().numpy(), raw)
    np.testing.assert_array_equal(load_raw("synthetic", "test", options=opts)[0], test)
    assert not np.array_equal(load_raw("synthetic", "train", options={**opts, "seed": 5})[0], train)


def test_prepare_writes_both_splits_and_checks_channels(tmp_path):
    opts = {"n_train": 30, "n_test": 10, "size": 16, "channels": 1, "classes": 3, "train_subset": 20}
    prepare("synthetic", tmp_path / "train.npz", tmp_path / "test.npz", options=opts)
    x, y = load_prepared(tmp_path / "train.npz")
    assert x.shape == (20, 1, 16, 16) and float(x.max()) <= 1.0 and len(y) == 20
    with pytest.raises(GeovqError, match="1 channels, config expects 3"):
        prepare(
            "synthetic", tmp_path / "a.npz", tmp_path / "b.npz", options={**opts, "channels": 1}, expected_channels=3
        )
    assert not (tmp_path / "a.npz").exists()


def test_unknown_dataset():
    with pytest.raises(GeovqError, match="unknown dataset 'imagenet'"):
        load_raw("imagenet", "train")


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write("partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_prepared_file(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(GeovqError, match="train.npz"):
        load_prepared(tmp_path / "train.npz")


def test_synthetic_with_default_channels_is_grey():
    """dataset_options.channels defaults to null (no check): synthetic images are then 1-channel."""
    from geovq.data import load_raw

    images, _ = load_raw("synthetic", "train", options={"n_train": 5, "channels": None})
    assert images.shape == (5, 1, 16, 16)
