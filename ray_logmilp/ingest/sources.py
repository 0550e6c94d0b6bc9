"""Listing inputs: local paths, globs, directories, ``.gz`` and pyarrow filesystem URIs -> :class:`InputFile`.

:func:`expand_inputs` turns what the user typed into a sorted list of :class:`InputFile` and fails early
(:class:`InputError`) on a missing path, an empty directory or a glob without matches. Reading them is
:mod:`ray_logmilp.ingest.reading`.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = ["InputError", "InputFile", "expand_inputs", "filesystem"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_GLOB_CHARS = re.compile(r"[*?\[]")


class InputError(ValueError):
    """The inputs cannot be read (missing path, empty directory, glob without matches, bad URI)."""


@dataclass(frozen=True)
class InputFile:
    """One file to read.

    Attributes:
        name: how the file is named in the ``file`` column: its absolute local path, or its URI.
        path: the path inside its filesystem.
        size: bytes on storage (the compressed size for ``.gz``).
        compression: ``"gzip"`` or None.
        fs_uri: None for the local filesystem; otherwise a URI that ``pyarrow.fs.FileSystem.from_uri``
            resolves to the file's filesystem (the URI the user gave).
    """

    name: str
    path: str
    size: int
    compression: str | None = None
    fs_uri: str | None = None


# --------------------------------------------------------------------------------------------------
# Filesystems and input expansion
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def filesystem(fs_uri: str | None) -> pafs.FileSystem:
    if fs_uri is None:
        return pafs.LocalFileSystem()
    return pafs.FileSystem.from_uri(fs_uri)[0]


def _display_name(uri: str, fs: pafs.FileSystem, fs_path: str) -> str:
    if isinstance(fs, pafs.LocalFileSystem):
        return fs_path
    scheme, rest = uri.split("://", 1)
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    if fs_path.startswith("/"):
        return f"{scheme}://{netloc}{fs_path}"
    return f"{scheme}://{fs_path}"


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob (``*``, ``?``, ``[...]``, ``**`` across directories) to a regex on full paths."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            j = pattern.find("]", i + 2 if pattern.startswith("[!", i) or pattern.startswith("[^", i) else i + 1)
            if j < 0:
                out.append(re.escape(ch))
                i += 1
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/") if part)


def _files_under(fs: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(directory, recursive=True))
    base = directory.rstrip("/") + "/"
    return [i for i in infos if i.type == pafs.FileType.File and not _is_hidden(i.path[len(base):])]


def _input_file(uri: str | None, fs: pafs.FileSystem, info: pafs.FileInfo) -> InputFile:
    local = isinstance(fs, pafs.LocalFileSystem)
    name = info.path if (uri is None or local) else _display_name(uri, fs, info.path)
    compression = "gzip" if info.path.lower().endswith(".gz") else None
    return InputFile(name=name, path=info.path, size=int(info.size or 0), compression=compression,
                     fs_uri=None if local else uri)


def _expand_one(spec: str) -> list[InputFile]:
    spec = os.fspath(spec)
    if not spec:
        raise InputError("empty input path")
    is_uri = bool(_URI.match(spec))
    glob_at = _GLOB_CHARS.search(spec.split("://", 1)[1] if is_uri else spec)
    if is_uri:
        scheme_len = spec.index("://") + 3
        if glob_at is not None:
            cut = spec.rfind("/", 0, scheme_len + glob_at.start())
            root_uri = spec[: cut + 1] if cut >= scheme_len else spec[:scheme_len]
        else:
            root_uri = spec
        try:
            fs, root_path = pafs.FileSystem.from_uri(root_uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
            raise InputError(f"cannot open filesystem for {spec!r}: {exc}") from None
        uri: str | None = root_uri
        if glob_at is not None:
            pattern = root_path.rstrip("/") + "/" + spec[cut + 1 :] if cut >= scheme_len else spec[scheme_len:]
        else:
            pattern = None
        if isinstance(fs, pafs.LocalFileSystem):
            uri = None
    else:
        fs = pafs.LocalFileSystem()
        uri = None
        expanded = os.path.expanduser(spec)
        full = os.path.abspath(expanded)
        glob_at = None if os.path.lexists(full) else _GLOB_CHARS.search(expanded)  # '[1].log' may be a real name
        if glob_at is not None:
            # the static directory part before the first glob character
            root_path = os.path.dirname(os.path.abspath(expanded[: glob_at.start()] + "_"))
            pattern = full
        else:
            root_path, pattern = full, None

    if pattern is None:
        try:
            info = fs.get_file_info(root_path)
        except OSError as exc:
            raise InputError(f"cannot access input {spec!r}: {exc}") from None
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"input path not found: {spec!r}")
        if info.type == pafs.FileType.File:
            return [_input_file(uri, fs, info)]
        files = _files_under(fs, root_path)
        if not files:
            raise InputError(f"input directory {spec!r} contains no files")
        return [_input_file(uri, fs, i) for i in sorted(files, key=lambda i: i.path)]

    # glob: list below the static prefix and match full paths
    rx = _glob_regex(pattern)
    try:
        root_info = fs.get_file_info(root_path)
        if root_info.type != pafs.FileType.Directory:
            raise InputError(f"no files match {spec!r} (directory {root_path!r} does not exist)")
        recursive = "/" in pattern[len(root_path.rstrip("/")) + 1 :] or "**" in pattern
        infos = fs.get_file_info(pafs.FileSelector(root_path, recursive=recursive))
    except OSError as exc:
        raise InputError(f"cannot list {spec!r}: {exc}") from None
    base = root_path.rstrip("/") + "/"
    pattern_hidden = _is_hidden(pattern[len(base):])
    by_path: dict[str, pafs.FileInfo] = {}
    for info in infos:
        if not pattern_hidden and _is_hidden(info.path[len(base):]):
            continue
        if not rx.match(info.path):
            continue
        if info.type == pafs.FileType.File:
            by_path[info.path] = info
        elif info.type == pafs.FileType.Directory:  # a matching directory contributes all its files
            for sub in _files_under(fs, info.path):
                by_path[sub.path] = sub
    out = list(by_path.values())
    if not out:
        raise InputError(f"no files match {spec!r}")
    return [_input_file(uri, fs, i) for i in sorted(out, key=lambda i: i.path)]


def expand_inputs(paths: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]") -> list[InputFile]:
    """Resolve files, directories (recursive, sorted, hidden files skipped), globs (``*``, ``?``,
    ``[..]``, ``**``) and pyarrow filesystem URIs (``file:///x.log``, ``s3://bucket/logs/``) into
    files, in argument order, without duplicates. ``.gz`` files are marked ``compression="gzip"``.

    Raises:
        InputError: no paths, a missing path, a directory without files, a glob without matches,
            or a URI whose filesystem cannot be opened.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise InputError("no input paths given")
    seen: set[tuple[str | None, str]] = set()
    files: list[InputFile] = []
    for spec in paths:
        for f in _expand_one(spec):
            key = (f.fs_uri.split("://", 1)[0] if f.fs_uri else None, f.path)
            if key not in seen:
                seen.add(key)
                files.append(f)
    if not files:
        raise InputError(f"no input files found in {paths!r}")
    return files
