"""Paths that may be local folders or URIs (``file://``, ``s3://``, ``gs://``, ...), via pyarrow filesystems.

Every path the jobs take (inputs, outputs, storage_path, bundles) goes through here, so a cluster can
point them at shared storage without code changes.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any, Iterator

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


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, marker: str) -> Iterator[tuple[pafs.FileSystem, str]]:
    """Write the files of folder ``final`` so that a failed run leaves its previous content as it was.

    Yields ``(fs, tmp)``: a new, empty hidden folder beside ``final`` on the same filesystem; write every
    file there, ``marker`` (the folder's manifest) included. When the block ends without an exception the
    files are moved into ``final`` (created if needed): the old ``marker`` is deleted first and the new
    one moved in last, so a reader that checks the files against the marker never accepts a mix, even if
    the move is cut short (each move is a rename on a local disk, a copy on an object store). Files of
    ``final`` that the new run did not write are left alone. On an exception the temporary folder is
    deleted and ``final`` is not touched.
    """
    fs, root = resolve_dir(final)
    parent, name = posixpath.split(root)
    tag = f"tmp-{uuid.uuid4().hex[:12]}"
    # beside the folder (same filesystem, so local moves are renames); inside it at a bucket's root
    tmp = f"{parent}/.{name}.{tag}" if parent and name else f"{root}/.{tag}"
    fs.create_dir(tmp, recursive=True)
    try:
        yield fs, tmp
        _move_files(fs, tmp, root, marker)
    finally:
        if exists(fs, tmp):
            fs.delete_dir(tmp)


def _move_files(fs: pafs.FileSystem, src: str, dst: str, marker: str) -> None:
    files = sorted(i.path[len(src) + 1:] for i in fs.get_file_info(pafs.FileSelector(src, recursive=True))
                   if i.type == pafs.FileType.File)
    if marker not in files:
        raise FileNotFoundError(f"atomic_dir: {marker} was not written, so {dst} is left as it was")
    fs.create_dir(dst, recursive=True)
    if exists(fs, f"{dst}/{marker}"):
        fs.delete_file(f"{dst}/{marker}")
    for rel in [f for f in files if f != marker] + [marker]:
        if "/" in rel:
            fs.create_dir(f"{dst}/{posixpath.dirname(rel)}", recursive=True)
        fs.move(f"{src}/{rel}", f"{dst}/{rel}")


def describe(obj: Any) -> str:
    """A readable name for an input file object (InputFile or path)."""
    for attr in ("uri", "path"):
        if hasattr(obj, attr):
            return str(getattr(obj, attr))
    return str(obj)
