"""Listing inputs: local paths, globs, directories, ``.gz`` and pyarrow filesystem URIs -> :class:`InputFile`.

:func:`list_inputs` turns what the user typed into an :class:`InputListing`: the files to read, each real
file once (local names are compared by ``os.path.realpath``, URIs by normalised path), and what it left
out (directory symlinks that loop back to a parent, links to nothing, names of files already listed).
It fails early (:class:`InputError`) on a missing path, a symlink loop or dangling link given as input, an
empty directory or a glob without matches. :func:`expand_inputs` returns just the files. Reading them is
:mod:`ray_logmilp.ingest.reading`.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import posixpath
import re
import stat
from dataclasses import dataclass, field
from typing import Sequence

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = ["InputError", "InputFile", "InputListing", "expand_inputs", "filesystem", "list_inputs"]

log = logging.getLogger(__name__)

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


@dataclass
class InputListing:
    """What :func:`list_inputs` found.

    Attributes:
        files: the files to read, in argument order, each real file once.
        symlink_loops: directory symlinks not followed because they lead back to one of their own parents.
        broken_links: symlinks inside a listed directory that point to nothing (or to themselves).
        duplicates: how many names were dropped because they name a file already in ``files``.
    """

    files: list[InputFile] = field(default_factory=list)
    symlink_loops: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    duplicates: int = 0

    def skipped(self) -> dict:
        """The manifest's record of what the listing left out."""
        return {"symlink_loops": self.symlink_loops, "broken_links": self.broken_links,
                "duplicates": self.duplicates}


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


def _walk_local(directory: str, recursive: bool, listing: InputListing) -> list[pafs.FileInfo]:
    """Files and folders below a local ``directory``, as ``FileSelector`` lists them, but a directory
    symlink that leads back to one of its own parents is reported in ``listing`` and not followed:
    pyarrow follows it until the path grows too long, listing every file dozens of times."""
    out: list[pafs.FileInfo] = []
    stack = [(directory, frozenset({os.path.realpath(directory)}))]
    while stack:
        path, parents = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError as exc:
            raise InputError(f"cannot list {path!r}: {exc}") from None
        for entry in entries:
            try:
                st = entry.stat()                    # follows symlinks
            except OSError as exc:
                if not entry.is_symlink():
                    raise InputError(f"cannot access input {entry.path!r}: {exc}") from None
                if entry.path not in listing.broken_links:
                    listing.broken_links.append(entry.path)
                    log.warning("skipping %s: a symlink %s", entry.path, _link_problem(exc))
                continue
            if stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(entry.path)
                if real in parents:
                    if entry.path not in listing.symlink_loops:
                        listing.symlink_loops.append(entry.path)
                        log.warning("not following %s: a symlink loop back to %s", entry.path, real)
                    continue
                out.append(pafs.FileInfo(entry.path, pafs.FileType.Directory))
                if recursive:
                    stack.append((entry.path, parents | {real}))
            elif stat.S_ISREG(st.st_mode):
                out.append(pafs.FileInfo(entry.path, pafs.FileType.File, size=st.st_size))
    return out


def _link_problem(exc: OSError) -> str:
    return "loop (it leads back to itself)" if exc.errno == errno.ELOOP else "that points to a missing file"


def _listing(fs: pafs.FileSystem, directory: str, recursive: bool, listing: InputListing) -> list[pafs.FileInfo]:
    if isinstance(fs, pafs.LocalFileSystem):
        return _walk_local(directory, recursive, listing)
    return fs.get_file_info(pafs.FileSelector(directory, recursive=recursive))


def _missing(spec: str, path: str) -> InputError:
    """Say what a path that cannot be opened is: a symlink loop, a dangling symlink, or nothing."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return InputError(f"input path is a symlink loop: {spec!r} (it leads back to itself)")
        if os.path.islink(path):
            return InputError(f"input path is a symlink that points to a missing file: {spec!r} -> "
                              f"{os.readlink(path)!r}")
    return InputError(f"input path not found: {spec!r}")


def _files_under(fs: pafs.FileSystem, directory: str, listing: InputListing) -> list[pafs.FileInfo]:
    infos = _listing(fs, directory, True, listing)
    base = directory.rstrip("/") + "/"
    return [i for i in infos if i.type == pafs.FileType.File and not _is_hidden(i.path[len(base):])]


def _input_file(uri: str | None, fs: pafs.FileSystem, info: pafs.FileInfo) -> InputFile:
    local = isinstance(fs, pafs.LocalFileSystem)
    name = info.path if (uri is None or local) else _display_name(uri, fs, info.path)
    compression = "gzip" if info.path.lower().endswith(".gz") else None
    return InputFile(name=name, path=info.path, size=int(info.size or 0), compression=compression,
                     fs_uri=None if local else uri)


def _expand_one(spec: str, listing: InputListing) -> list[InputFile]:
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
            raise _missing(spec, root_path) if isinstance(fs, pafs.LocalFileSystem) else \
                InputError(f"input path not found: {spec!r}")
        if info.type == pafs.FileType.File:
            return [_input_file(uri, fs, info)]
        files = _files_under(fs, root_path, listing)
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
        infos = _listing(fs, root_path, recursive, listing)
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
            for sub in _files_under(fs, info.path, listing):
                by_path[sub.path] = sub
    out = list(by_path.values())
    if not out:
        raise InputError(f"no files match {spec!r}")
    return [_input_file(uri, fs, i) for i in sorted(out, key=lambda i: i.path)]


def _identity(f: InputFile) -> tuple[str | None, str]:
    """Two names for the same file get the same identity: the real path of a local file (symlinks and
    ``..`` resolved), the normalised path inside a URI's filesystem (object stores have no symlinks)."""
    if f.fs_uri is None:
        return None, os.path.realpath(f.path)
    return f.fs_uri.split("://", 1)[0], posixpath.normpath(f.path)


def list_inputs(paths: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]") -> InputListing:
    """Resolve files, directories (recursive, sorted, hidden files skipped), globs (``*``, ``?``,
    ``[..]``, ``**``) and pyarrow filesystem URIs (``file:///x.log``, ``s3://bucket/logs/``) into
    files, in argument order, each real file once: a file named twice (two inputs, a glob and its
    directory, a symlink and its target) is listed under its first name. Directory symlinks that loop
    back to a parent are not followed and symlinks to nothing are skipped; both are logged as warnings
    and recorded in the listing. ``.gz`` files are marked ``compression="gzip"``.

    Raises:
        InputError: no paths, a missing path (or a symlink loop or dangling symlink given as input), a
            directory without files, a glob without matches, or a URI whose filesystem cannot be opened.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise InputError("no input paths given")
    listing = InputListing()
    seen: set[tuple[str | None, str]] = set()
    for spec in paths:
        for f in _expand_one(spec, listing):
            key = _identity(f)
            if key in seen:
                listing.duplicates += 1
            else:
                seen.add(key)
                listing.files.append(f)
    if not listing.files:
        raise InputError(f"no input files found in {paths!r}")
    if listing.duplicates:
        log.info("%d input name(s) point to files already listed: each file is read once", listing.duplicates)
    return listing


def expand_inputs(paths: "str | os.PathLike[str] | Sequence[str | os.PathLike[str]]") -> list[InputFile]:
    """The files of :func:`list_inputs` (each real file once, in argument order)."""
    return list_inputs(paths).files
