"""Writing and reading run artefacts so that a killed run never leaves a broken file.

Every artefact is written to a temporary file in the target folder and then renamed over
the target (``os.replace`` is atomic on one file system): a reader sees the old file or the
new one, never half of one.  Tensor files are read with ``weights_only=True``: loading a
checkpoint never unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_path)`` then move the result onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_dir)`` then swap the finished folder in for ``path``.

    A folder cannot be renamed over a non-empty one, so the old folder is moved aside first
    and removed only after the new one is in place: ``path`` is never a half-written folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = path.with_name(f".{path.name}.old")
    try:
        write(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
    return path


def save_tensors(obj: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` of tensors and plain values, atomically."""
    return atomic_write(path, lambda tmp: torch.save(dict(obj), tmp))


def load_tensors(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a file written by :func:`save_tensors` without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Artefact '{path}' does not exist.")
    return torch.load(path, map_location=device, weights_only=True)


def save_json(obj: Any, path: str | Path) -> Path:
    """JSON, atomically (metrics, configs)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def fingerprint(values: Mapping[str, Any]) -> str:
    """A short stable hash of configuration values: the key of a reusable artefact."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def file_identity(path: str | Path, root: str | Path | None = None) -> list:
    """A file as ``[name, size, modification time]``: changes whenever the file is rewritten."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        return [str(path), None, None]
    stat = path.stat()
    name = str(path.relative_to(root)) if root is not None else str(path)
    return [name, stat.st_size, stat.st_mtime_ns]


def content_hash(file: str | Path) -> str:
    """SHA-256 of a file's bytes (remembered per path, size and time within a process)."""
    return _content_hash(*file_identity(file))


@lru_cache(maxsize=64)
def _content_hash(path: str, size: int | None, mtime: int | None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
