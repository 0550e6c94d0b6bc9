"""Paths that may be local folders or URIs (``file://``, ``s3://``, ``gs://``, ...), via pyarrow filesystems.

Every path the jobs take (inputs, outputs, storage_path, bundles) goes through here, so a cluster can
point them at shared storage without code changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in str(path)


def resolve(path: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    path = str(path)
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path).expanduser().resolve())


def resolve_dir(path: str | os.PathLike, create: bool = False) -> tuple[pafs.FileSystem, str]:
    fs, p = resolve(path)
    if create:
        fs.create_dir(p, recursive=True)
    return fs, p.rstrip("/")


def uri(fs: pafs.FileSystem, path: str) -> str:
    """A string Ray Data and pyarrow accept for ``path`` inside ``fs``."""
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    return f"{fs.type_name}://{path}"


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_text(fs: pafs.FileSystem, path: str, text: str) -> None:
    with fs.open_output_stream(path) as out:
        out.write(text.encode("utf-8"))


def read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as src:
        return src.read().decode("utf-8")


def describe(obj: Any) -> str:
    """A readable name for an input file object (InputFile or path)."""
    for attr in ("uri", "path"):
        if hasattr(obj, attr):
            return str(getattr(obj, attr))
    return str(obj)
