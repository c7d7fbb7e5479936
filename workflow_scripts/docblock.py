"""Generated blocks in hand-written Markdown: the text between two marker comments, replaced whole.

Shared by the documentation generators (readme_summary.py, config_reference.py, rulegraph.py).
"""

import os
import tempfile
from pathlib import Path


class DocError(Exception):
    """A generator cannot do its job; the message is one line and names the file."""


def read(path) -> str:
    path = Path(path)
    if not path.is_file():
        raise DocError(f"{path}: not found")
    return path.read_text(encoding="utf-8")


def block(text: str, begin: str, end: str, path) -> tuple[int, int]:
    """(start, stop) of the text between the one ``begin`` marker line and the one ``end`` marker line."""
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < 0 or j < i or text.count(begin) != 1 or text.count(end) != 1:
        raise DocError(f"{path}: needs exactly one '{begin}' line followed by one '{end}' line")
    return i + len(begin), j


def current(text: str, begin: str, end: str, path) -> str:
    """The body of the block (between the marker lines), as committed."""
    start, stop = block(text, begin, end, path)
    return text[start:stop]


def replace(text: str, body: str, begin: str, end: str, path) -> str:
    """``text`` with the block's body replaced by ``body`` (which should start and end with a newline)."""
    start, stop = block(text, begin, end, path)
    return text[:start] + body + text[stop:]


def write_atomic(path, data) -> None:
    """Write ``data`` (str or bytes) to a temporary file beside ``path``, then rename it over ``path``:
    a reader never sees half a file, and an interrupted write leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
