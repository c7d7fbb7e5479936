"""Artifact I/O: atomic writes (temp file + rename) and loaders that fail with one clear line."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


class GeovqError(Exception):
    """An input problem reported to the user as one line (file or key, and what was expected)."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or interrupt therefore never leaves a half-written file under the final name.
    The temporary name keeps the suffix, since some writers (np.savez, torch.save users,
    matplotlib) choose the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npz(path, **arrays):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_npz(path, keys=()):
    """Load an .npz artifact into a dict, checking that ``keys`` are present."""
    path = Path(path)
    if not path.exists():
        raise GeovqError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # zip/pickle/format errors all mean a corrupt artifact
        raise GeovqError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise GeovqError(f"{path}: missing arrays {missing}; has {sorted(data)}")
    return data


def save_json(path, obj):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GeovqError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise GeovqError(f"{path}: invalid JSON ({e})") from None


def save_text(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def save_torch(path, obj):
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path, kind, model, **meta):
    """A model checkpoint: its ``kind``, what rebuilds it (``meta``) and its weights on the CPU."""
    save_torch(path, {"kind": kind, **meta, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}})


def load_checkpoint(path, kinds, dataset=None):
    """The checkpoint dict at ``path``; its kind must be one of ``kinds`` and, if given, its dataset ``dataset``."""
    ck = load_torch(path)
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not isinstance(ck, dict) or ck.get("kind") not in kinds or "state_dict" not in ck:
        raise GeovqError(f"{path}: not a geovq {' or '.join(kinds)} checkpoint")
    if dataset is not None and ck.get("dataset") != dataset:
        raise GeovqError(f"{path}: {ck['kind']} checkpoint is for dataset {ck.get('dataset')!r}, expected {dataset!r}")
    return ck


def restore(ck, model, device):
    """``model`` with the checkpoint's weights, on ``device``, in eval mode."""
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval()


def load_torch(path):
    import torch

    path = Path(path)
    if not path.exists():
        raise GeovqError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise GeovqError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
