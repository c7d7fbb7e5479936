"""Artifact I/O: atomic writes (temp file + rename) and loaders that fail with one clear line."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import pickle
import re
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
    matplotlib) choose the format from it. A full disk (or quota) becomes a one-line GeovqError
    naming ``path``; the temporary file is removed in every case.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free / 2**20
            raise GeovqError(
                f"{path}: {os.strerror(e.errno).lower()} while writing it ({free:.1f} MiB free there); "
                "nothing was written under this name: free space, then rerun the same command"
            ) from None
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


def _plain(obj, where="checkpoint"):
    """Raise TypeError unless ``obj`` is tensors and plain values only (what ``load_torch`` will read)."""
    import torch

    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _plain(v, f"{where}[{i}]")
        return
    if type(obj) is dict:
        for k, v in obj.items():
            if type(k) is not str:
                raise TypeError(f"{where}: key {k!r} is not a str")
            _plain(v, f"{where}.{k}")
        return
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} is not a tensor or a plain value")


def save_torch(path, obj):
    """Write ``obj`` (nested dicts/lists of tensors, str, int, float, bool, None: nothing else) with torch.save."""
    import torch

    _plain(obj)
    buf = io.BytesIO()  # serialized first: torch.save's own writer reports a full disk as a cryptic RuntimeError
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())


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
        # weights_only: tensors and plain values, never an arbitrary pickled object, so that a
        # checkpoint in a shared results/ cannot run code in the jobs that read it
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise GeovqError(
                f"{path}: refused: the checkpoint holds a pickled Python object ({found[1]}), not only "
                "tensors and plain values; geovq reads checkpoints with torch.load(weights_only=True) "
                "so that a file cannot run code"
            ) from None
        detail = re.search(r"Unsupported operand \d+|invalid load key[^\n]*", str(e))
        raise GeovqError(
            f"{path}: not a readable checkpoint (corrupt, or not written by torch.save: "
            f"{detail[0] if detail else _first_line(e)})"
        ) from None
    except Exception as e:
        raise GeovqError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e):
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else ""
