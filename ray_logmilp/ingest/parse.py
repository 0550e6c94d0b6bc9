"""The parser's hot path: :func:`parse_chunk` turns a chunk of raw lines into events or quarantine rows.

It parses a whole chunk with a handful of vectorised Arrow kernels (``extract_regex``, ``strptime``,
casts) and returns two tables, the events (:data:`~ray_logmilp.ingest.schemas.PARSED_SCHEMA`) and the
quarantine (:data:`~ray_logmilp.ingest.schemas.QUARANTINE_SCHEMA`), such that every input line lands in
exactly one of them.

Headers are matched with the regexes :mod:`ray_logmilp.ingest.header` compiled: the fast regex on every
line, the exact Loghub regex on the lines it rejects. A header whose fields are separated by spaces only
(BGL: ``<Label> <Timestamp> ... <Level> <Content>``) skips the regex altogether for the lines it can: an
ASCII-whitespace split gives the exact regex's captures for every line that splits into
``len(fields)`` pieces and holds no ``\\v`` (the one ASCII whitespace that RE2's ``\\s`` leaves out); any
other line takes the regex path. The split costs a third of the regex.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_logmilp.ingest.format_spec import LogFormat
from ray_logmilp.ingest.header import CompiledHeader
from ray_logmilp.ingest.schemas import (
    PARSED_SCHEMA,
    QUARANTINE_SCHEMA,
    RAW_CHARS,
    empty_events,
    empty_quarantine,
    raw_text,
)

__all__ = ["parse_chunk"]

_EPOCH_PATTERN = r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$"
_FRACTION_TAIL = r"[.,]\d{1,9}$"
_FRACTION_DIGITS = r"[.,](?P<frac>\d{1,9})$"


def _as_binary_array(lines: "Sequence[bytes] | pa.Array | pa.ChunkedArray") -> tuple[pa.Array, bool]:
    """(array, already_text): a binary (or string) Arrow array of the lines, built without a Python
    loop over lines for list input (one join + lengths)."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if isinstance(lines, pa.Array):
        t = lines.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return lines, True
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return lines, False
        if pa.types.is_string_view(t):
            return lines.cast(pa.large_string()), True
        if pa.types.is_binary_view(t):
            return lines.cast(pa.large_binary()), False
        raise TypeError(f"parse_chunk: lines must be a binary or string Arrow array, got {t}")
    n = len(lines)
    if n == 0:
        return pa.array([], pa.binary()), False
    if isinstance(lines[0], str):
        return pa.array(lines, pa.large_string()), True
    lengths = np.fromiter(map(len, lines), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = b"".join(lines)
    if offsets[-1] < 2**31 - 1:
        arr = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])
    else:
        arr = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return arr, False


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


# Reason codes (index into _REASON_CODES); 0 = parsed.
_REASON_CODES = ("", "line_too_long", "undecodable_bytes", "empty_line", "header_mismatch", "bad_timestamp",
                 "nul_byte")
_TOO_LONG, _UNDECODABLE, _EMPTY, _MISMATCH, _BAD_TS, _NUL = 1, 2, 3, 4, 5, 6


def _nul_lines(arr: pa.Array) -> np.ndarray | None:
    """Bool mask of the lines holding a NUL byte, or None when the chunk has none (one memchr over the
    chunk's bytes decides that; the per-line kernel runs only when it finds one)."""
    data = arr.buffers()[2]
    if data is None or data.to_pybytes().find(b"\x00") < 0:
        return None
    return _np_bool(pc.match_substring(arr, "\x00"))


def _parse_timestamps(fmt: LogFormat, values: pa.Array) -> pa.Array:
    """float64 epoch seconds for each (joined) timestamp string; null where it does not parse."""
    comp = fmt._compiled
    if fmt.timestamp.is_epoch:
        ok = pc.match_substring_regex(values, pattern=_EPOCH_PATTERN)
        safe = pc.if_else(ok, pc.utf8_trim_whitespace(values), pa.scalar("0", values.type))
        out = pc.cast(safe, pa.float64())
        ok = pc.and_(ok, pc.is_finite(out))  # '1e400' parses to inf
        return pc.if_else(ok, out, pa.scalar(None, pa.float64()))
    if not comp.ts_has_fraction:
        ts = pc.strptime(values, format=comp.ts_base_format, unit="s", error_is_null=True)
        return pc.cast(pc.cast(ts, pa.int64()), pa.float64())
    # both searches are anchored at the end only, so RE2 runs them with its DFA (fast)
    main = pc.replace_substring_regex(values, pattern=_FRACTION_TAIL, replacement="", max_replacements=1)
    frac = pc.struct_field(pc.extract_regex(values, pattern=_FRACTION_DIGITS), "frac")
    ts = pc.strptime(main, format=comp.ts_base_format, unit="s", error_is_null=True)
    secs = pc.cast(pc.cast(ts, pa.int64()), pa.float64()).to_numpy(zero_copy_only=False)
    frac = pc.fill_null(frac, "")
    flen = pc.utf8_length(frac).to_numpy(zero_copy_only=False).astype(np.int64)
    fval = pc.cast(pc.if_else(pc.equal(flen, 0), "0", frac), pa.int64()).to_numpy(zero_copy_only=False)
    out = secs + fval / np.power(10.0, flen)
    return pa.array(out, pa.float64(), mask=np.isnan(secs))


def _regex_header(comp: CompiledHeader, text: pa.Array, candidates: np.ndarray) -> pa.StructArray:
    """Needed fields per line (null where the header does not match): fast regex, exact on its misses."""
    matched = pc.extract_regex(text, pattern=comp.fast_regex)
    if comp.fast_is_exact:
        return matched
    miss_idx = np.flatnonzero(candidates & ~_np_bool(pc.is_valid(matched)))
    if len(miss_idx) == 0:
        return matched
    slow = pc.extract_regex(text.take(pa.array(miss_idx)), pattern=comp.exact_regex)
    return _merge_rows(matched, slow.cast(matched.type), miss_idx)


def _merge_rows(base: pa.Array, patch: pa.Array, patch_idx: np.ndarray) -> pa.Array:
    """``base`` with rows ``patch_idx`` replaced by the rows of ``patch``, in order."""
    take_idx = np.arange(len(base), dtype=np.int64)
    take_idx[patch_idx] = len(base) + np.arange(len(patch_idx))
    return pc.take(pa.concat_arrays([base, patch]), pa.array(take_idx))


def _split_header(comp: CompiledHeader, text: pa.Array) -> tuple[pa.StructArray, np.ndarray]:
    """Needed fields of a whitespace-only header by splitting on ASCII-whitespace runs; returns the fields
    (null where the split cannot vouch for the regex's answer) and a bool mask of those rows."""
    n_fields = len(comp.fields)
    pieces = pc.ascii_split_whitespace(text, max_splits=n_fields - 1)       # list<string> [n]
    offsets = pieces.offsets.to_numpy()                                      # [n + 1] into pieces.values
    values = pieces.values
    first = offsets[:-1]
    # Loghub's fields are lazy (.*?) and its separators greedy (\s+): with n - 1 whitespace runs to spend
    # and .* last, each field ends at the first run, exactly where the split cuts (a leading blank gives
    # an empty first field in both). Fewer pieces: the regex path decides (a run may serve twice there).
    ok = np.diff(offsets) == n_fields
    data = text.buffers()[2]
    if data is not None and (np.frombuffer(data, np.uint8) == 0x0B).any():
        ok &= ~_np_bool(pc.match_substring(text, "\v"))                     # \v splits here, not in RE2
    not_ok = ~ok
    arrays = [values.take(pa.array(first + comp.fields.index(name), mask=not_ok)) for name in comp.needed]
    return pa.StructArray.from_arrays(arrays, names=list(comp.needed), mask=pa.array(not_ok)), ok


def _match_header(comp: CompiledHeader, text: pa.Array, candidates: np.ndarray) -> pa.StructArray:
    """The needed header fields of every line, exactly as the Loghub regex captures them (null on no
    match). ``candidates`` marks the lines worth matching; others may come back null."""
    if not comp.whitespace_only:
        return _regex_header(comp, text, candidates)
    matched, ok = _split_header(comp, text)
    rest = np.flatnonzero(candidates & ~ok)
    if len(rest) == 0:
        return matched
    by_regex = _regex_header(comp, text.take(pa.array(rest)), np.ones(len(rest), bool))
    return _merge_rows(matched, by_regex.cast(matched.type), rest)


def parse_chunk(
    fmt: LogFormat,
    lines: "Sequence[bytes] | pa.Array | pa.ChunkedArray",
    file: str,
    first_line_no: int,
) -> tuple[pa.Table, pa.Table]:
    """Parse consecutive lines (newlines already removed) into ``(events, quarantine)``.

    Line ``i`` of ``lines`` is line number ``first_line_no + i`` of ``file``. A trailing ``\\r`` is
    removed. Every line ends up in exactly one of the two tables (schemas :data:`PARSED_SCHEMA`,
    :data:`QUARANTINE_SCHEMA`); quarantine reasons, checked in this order: ``line_too_long`` (over
    ``fmt.max_line_bytes`` bytes), ``nul_byte`` (holds a NUL byte: a corrupt or binary file, never a log
    line, though UTF-8 allows it), ``undecodable_bytes`` (not UTF-8), ``empty_line`` (empty or only
    whitespace), ``header_mismatch``, ``bad_timestamp``.
    """
    arr, is_text = _as_binary_array(lines)
    n = len(arr)
    if n == 0:
        return empty_events(), empty_quarantine()
    comp = fmt._compiled
    line_nos = np.arange(first_line_no, first_line_no + n, dtype=np.int64)
    code = np.zeros(n, dtype=np.int8)

    # 1. trailing '\r' (CRLF files); ASCII, so safe on bytes
    cr = pc.ends_with(arr, "\r")
    if pc.any(cr).as_py():
        arr = pc.if_else(cr, pc.binary_slice(arr, 0, -1) if not is_text else pc.utf8_slice_codeunits(arr, 0, -1), arr)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()

    # 2. over-long lines: blank them before decoding so megabytes are never decoded
    lengths = pc.binary_length(arr.cast(pa.large_binary()) if is_text else arr).to_numpy(zero_copy_only=False)
    too_long = lengths > fmt.max_line_bytes
    special_raw: dict[int, str] = {}
    blank = pa.scalar("" if is_text else b"", arr.type)
    if too_long.any():
        for i in np.flatnonzero(too_long):
            special_raw[int(i)] = raw_text(arr[int(i)].as_py())
        code[too_long] = _TOO_LONG
        arr = pc.if_else(pa.array(too_long), blank, arr)

    # 3. NUL bytes (valid UTF-8, so the decode below would let them through)
    nul = _nul_lines(arr)
    if nul is not None:
        nul &= code == 0
        for i in np.flatnonzero(nul):
            special_raw[int(i)] = raw_text(arr[int(i)].as_py())
        code[nul] = _NUL

    # 4. UTF-8: validate the whole chunk at once; per line only if that fails
    if is_text:
        text = arr
    else:
        try:
            text = arr.cast(pa.large_string() if pa.types.is_large_binary(arr.type) else pa.string())
        except pa.ArrowInvalid:
            values = arr.to_pylist()
            decoded: list[str] = []
            for i, value in enumerate(values):
                try:
                    decoded.append(value.decode("utf-8"))
                except UnicodeDecodeError:
                    decoded.append("")
                    if code[i] == 0:
                        code[i] = _UNDECODABLE
                        special_raw[i] = raw_text(value)
            text = pa.array(decoded, pa.large_string() if pa.types.is_large_binary(arr.type) else pa.string())

    # 5. blank lines (counted, never silently skipped)
    empty = (lengths == 0) | _np_bool(pc.utf8_is_space(text))
    code[(code == 0) & empty] = _EMPTY

    # 6. header: whitespace split or fast regex on everything, exact Loghub regex on what they reject
    matched = _match_header(comp, text, code == 0)
    header_ok = _np_bool(pc.is_valid(matched))
    code[(code == 0) & ~header_ok] = _MISMATCH

    # 7. timestamps
    ts_cols = [pc.struct_field(matched, f) for f in fmt.timestamp.fields]
    ts_text = ts_cols[0] if len(ts_cols) == 1 else pc.binary_join_element_wise(*ts_cols, pa.scalar(" ", ts_cols[0].type))
    ts = _parse_timestamps(fmt, ts_text)
    ts_ok = _np_bool(pc.is_valid(ts))
    code[(code == 0) & ~ts_ok] = _BAD_TS

    ok = code == 0
    ok_arr = pa.array(ok)
    k = int(ok.sum())

    # events
    content = pc.struct_field(matched, "Content").filter(ok_arr)
    if fmt.label is not None:
        lab = pc.struct_field(matched, fmt.label.field).filter(ok_arr)
        label = pc.cast(pc.not_equal(lab, fmt.label.normal), pa.int8())
    else:
        label = pa.array(np.full(k, -1, dtype=np.int8))
    if fmt.session is not None:
        src = pc.struct_field(matched, fmt.session.field).filter(ok_arr)
        session = pc.struct_field(pc.extract_regex(src, pattern=comp.session_regex), "session")
    else:
        session = pa.nulls(k, pa.string())
    events = pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar(file, pa.string()), k),
            pa.array(line_nos[ok]),
            ts.filter(ok_arr),
            label,
            session.cast(pa.string()),
            content.cast(pa.string()),
        ],
        schema=PARSED_SCHEMA,
    )

    # quarantine (in line order)
    bad = np.flatnonzero(~ok)
    if len(bad) == 0:
        return events, empty_quarantine()
    raws = pc.utf8_slice_codeunits(text.take(pa.array(bad)), 0, RAW_CHARS).to_pylist()
    for j, i in enumerate(bad):
        if int(i) in special_raw:
            raws[j] = special_raw[int(i)]
    reasons = pc.take(pa.array(_REASON_CODES, pa.string()), pa.array(code[bad]))
    quarantine = pa.Table.from_arrays(
        [pa.repeat(pa.scalar(file, pa.string()), len(bad)), pa.array(line_nos[bad]), reasons,
         pa.array(raws, pa.string())],
        schema=QUARANTINE_SCHEMA,
    )
    return events, quarantine
