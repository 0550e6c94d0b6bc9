"""The header compiler: a Loghub header template -> the regexes and field list that parse it.

The header is a Loghub-style template such as ``<Date> <Time> <Level> <Component>: <Content>``: every
``<Field>`` is a named field, runs of spaces between fields match any run of whitespace, and the literal
text between fields is a regular-expression fragment (RE2 syntax, as used by pyarrow), so
``<Component>(\\[<PID>\\])?: <Content>`` is allowed.

Field semantics follow Loghub's ``generate_logformat_regex`` exactly (every field ``(.*?)``, the template
anchored at both ends). For speed the compiler also builds an equivalent, cheaper regex (fields before a
space become ``\\S+``, fields before a literal character ``c`` become ``[^c]*``) that RE2 can run in one
pass; :mod:`ray_logmilp.ingest.parse` re-matches the lines it rejects with the exact regex, so the result is
always the Loghub result. A header whose fields are separated by spaces only is marked
``whitespace_only``: the parser may split such lines on whitespace instead of running a regex.

Every check raises :class:`~ray_logmilp.config.ConfigError` naming the format key (``header``,
``session.pattern``, ``timestamp.format``, ``masking[0].pattern``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from ray_logmilp.config import require

__all__ = ["CompiledHeader", "check_re2", "compile_header"]

_PLACEHOLDER = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")
_REGEX_META = set(".^$*+?()[]{}|\\")
_FRACTION_SEPARATORS = ".,:"


@dataclass(frozen=True)
class CompiledHeader:
    """Derived, validated regexes of a format (computed once when the format is built)."""

    fields: tuple[str, ...]
    needed: tuple[str, ...]
    header_regex: str  # exact Loghub regex, every field captured (for humans and split_line)
    exact_regex: str  # exact Loghub regex, only needed fields captured
    fast_regex: str  # equivalent regex that RE2 can usually run one-pass
    fast_is_exact: bool  # fast == exact (nothing could be sped up)
    whitespace_only: bool  # fields separated by spaces only: the split fast path applies
    session_regex: str | None
    ts_base_format: str | None  # strptime format without the fraction part
    ts_has_fraction: bool


def compile_header(header: str, needed: Sequence[str], field_refs: dict[str, Sequence[str]],
                   ts_format: str, session_pattern: str | None) -> CompiledHeader:
    """Compile and check a format's header, timestamp format and session pattern.

    ``needed`` are the fields parsing must capture; ``field_refs`` maps a format key (``label.field``)
    to the field names it refers to, each of which must be a header field.
    """
    fields, header_regex, exact_regex, fast_regex, fast_is_exact = _compile_regexes(header, needed)
    for key, names in field_refs.items():
        for name in names:
            require(name in fields, key, f"names {name!r}, which is not a header field {list(fields)}")
    require("Content" in fields, "header", f"{header!r} must contain a <Content> field")
    check_re2(header_regex, "header")
    check_re2(fast_regex, "header")
    base, has_frac = _timestamp_format(ts_format)
    session_rx = None
    if session_pattern is not None:
        session_rx = _session_regex(session_pattern)
        check_re2(session_rx, "session.pattern")
    return CompiledHeader(fields, tuple(needed), header_regex, exact_regex, fast_regex, fast_is_exact,
                          _whitespace_only(header), session_rx, base, has_frac)


def check_re2(pattern: str, key: str, replacement: str | None = None) -> None:
    """Compile ``pattern`` with RE2 (pyarrow); a ConfigError naming ``key`` quotes RE2's message if invalid."""
    probe = pa.array(["probe"], pa.string())
    error = None
    try:
        if replacement is None:
            pc.match_substring_regex(probe, pattern=pattern)
        else:
            pc.replace_substring_regex(probe, pattern=pattern, replacement=replacement)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        error = exc
    require(error is None, key, f"invalid regular expression {pattern!r}: {error}")


def _timestamp_format(fmt: str) -> tuple[str | None, bool]:
    """(strptime format without a trailing fraction, whether there is one); (None, False) for epoch."""
    if fmt == "epoch":
        return None, False
    key = "timestamp.format"
    require("%" in fmt, key, f"must be 'epoch' or a strptime format, got {fmt!r}")
    base, has_frac = fmt, False
    if "%f" in fmt:
        require(fmt.endswith("%f") and fmt.count("%f") == 1 and len(fmt) >= 3 and fmt[-3] in _FRACTION_SEPARATORS,
                key, f"{fmt!r}: %f is only supported at the very end, after one of {_FRACTION_SEPARATORS!r} "
                     "(e.g. '%H:%M:%S,%f')")
        base, has_frac = fmt[:-3], True
    error = None
    try:
        pc.strptime(pa.array(["x"]), format=base, unit="s", error_is_null=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        error = exc
    require(error is None, key, f"{fmt!r} is not usable: {error}")
    return base, has_frac



def _regex_pieces(pattern: str):
    """Split a regex into (index, piece): an escape (``\\x``), a whole character class (``[...]``, where a
    ``]`` right after ``[`` or ``[^`` is a member), or one character. Rewriters act on the ``(`` pieces and
    copy the rest, so a ``(`` inside a class or after a backslash is never mistaken for a group."""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            yield i, pattern[i:i + 2]
            i += 2
        elif ch == "[":
            j = i + 1
            if pattern.startswith("^", j):
                j += 1
            if pattern.startswith("]", j):
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            yield i, pattern[i:j + 1]
            i = j + 1
        else:
            yield i, ch
            i += 1


def _rewrite_groups(fragment: str) -> str:
    """Turn unnamed capturing groups ``(`` of a regex fragment into ``(?:`` (pyarrow's
    ``extract_regex`` accepts named groups only). Named groups are rejected."""
    out: list[str] = []
    for i, piece in _regex_pieces(fragment):
        if piece == "(":
            require(not (fragment.startswith("(?P<", i) or fragment.startswith("(?<", i)), "header",
                    f"named groups are not allowed here ({fragment!r})")
            piece = "(" if fragment.startswith("(?", i) else "(?:"
        out.append(piece)
    return "".join(out)


def _literal_tokens(literal: str) -> list[tuple[str, str]]:
    """Tokenise a header literal into ('sep', ' ') for space runs, ('char', c) for a literal
    character (plain or escaped punctuation) and ('complex', text) for anything else."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(literal)
    while i < n:
        ch = literal[i]
        if ch == " ":
            while i < n and literal[i] == " ":
                i += 1
            tokens.append(("sep", " "))
            continue
        if ch == "\\":
            nxt = literal[i + 1 : i + 2]
            if nxt and not nxt.isalnum() and nxt != "_":
                tokens.append(("char", nxt))
            else:
                tokens.append(("complex", literal[i : i + 2]))
            i += 2
            continue
        if ch in _REGEX_META:
            tokens.append(("complex", ch))
        else:
            tokens.append(("char", ch))
        i += 1
    return tokens


def _char_class_escape(c: str) -> str:
    return c if c.isalnum() else "\\" + c


def _compile_regexes(header: str, needed: Sequence[str]) -> tuple[tuple[str, ...], str, str, str, bool]:
    """Build (fields, header_regex, exact_regex, fast_regex, fast_is_exact) from a template."""
    parts = _PLACEHOLDER.split(header)
    literals = parts[0::2]  # len(fields) + 1 literals around the fields
    fields = tuple(parts[1::2])
    require(bool(fields), "header", f"{header!r} has no <Field> placeholders")
    dupes = sorted({f for f in fields if fields.count(f) > 1})
    require(not dupes, "header", f"repeats field(s) {dupes}")
    for lit in literals:
        bad = re.search(r"<[A-Za-z_][^<>\s]*>", lit)
        require(bad is None, "header", f"field {bad and bad.group(0)!r} is not a valid name "
                                       "(letters, digits and '_', not starting with a digit)")
        require(not (lit.endswith("(?P") or lit.endswith("(?")), "header",
                f"named groups are not allowed in the header literal {lit!r}")
    # Loghub: runs of spaces -> \s+, the rest of a literal is a regex fragment.
    lit_rx = [_rewrite_groups(re.sub(" +", r"\\s+", lit)) for lit in literals]
    last_is_field = literals[-1] == ""
    n = len(fields)

    def exact(capture: Iterable[str]) -> str:
        capture = set(capture)
        out = ["^", lit_rx[0]]
        for i, name in enumerate(fields):
            body = ".*" if (i == n - 1 and last_is_field) else ".*?"
            out.append(f"(?P<{name}>{body})" if name in capture else f"(?:{body})")
            out.append(lit_rx[i + 1])
        out.append("$")
        return "".join(out)

    header_regex = exact(fields)
    exact_regex = exact(needed)

    # Fast regex: restrict fields while every literal so far is simple (see module docstring).
    needed_set = set(needed)
    out = ["^", lit_rx[0]]
    simple = all(kind != "complex" for kind, _ in _literal_tokens(literals[0]))
    changed = False
    for i, name in enumerate(fields):
        nxt = _literal_tokens(literals[i + 1])
        is_last = i == n - 1 and last_is_field
        if is_last:
            prev = _literal_tokens(literals[i])
            if prev and prev[-1][0] == "sep":
                body = r"(?:\S.*)?"  # same language as '\s+.*$', but unambiguous for RE2
                changed = True
            else:
                body = ".*"
        elif simple and nxt and nxt[0][0] == "sep":
            body, changed = r"\S+", True
        elif simple and nxt and nxt[0][0] == "char":
            c = _char_class_escape(nxt[0][1])
            prev = _literal_tokens(literals[i])
            # after a space run the field must not start with whitespace: keeps RE2 one-pass
            body = f"(?:[^{c}\\s][^{c}]*)?" if prev and prev[-1][0] == "sep" else f"[^{c}]*"
            changed = True
        else:
            body = ".*?"
            simple = False
        if not is_last and any(kind == "complex" for kind, _ in nxt):
            simple = False
        out.append(f"(?P<{name}>{body})" if name in needed_set else f"(?:{body})")
        out.append(lit_rx[i + 1])
    out.append("$")
    fast_regex = "".join(out)
    return fields, header_regex, exact_regex, fast_regex, not changed


def _whitespace_only(header: str) -> bool:
    """True when the header is ``<F1> <F2> ... <Fn>``: starts and ends with a field, spaces in between."""
    literals = _PLACEHOLDER.split(header)[0::2]
    return (len(literals) > 2 and literals[0] == "" and literals[-1] == ""
            and all(lit and not lit.strip(" ") for lit in literals[1:-1]))


def _session_regex(pattern: str) -> str:
    """Name the single capture group of a session pattern 'session' (or wrap the whole pattern)."""
    try:
        groups = re.compile(pattern).groups
    except re.error:
        groups = None  # not Python syntax; RE2 will judge it below
    check_re2(pattern, "session.pattern")
    if groups is None:
        groups = pattern.count("(") - pattern.count("(?") - pattern.count("\\(")
    if groups == 0:
        return f"(?P<session>{pattern})"
    require(groups == 1, "session.pattern", f"{pattern!r} must have at most one capture group, has {groups}")
    # rewrite the single capturing group to a named one
    out: list[str] = []
    skip_to = 0
    for i, piece in _regex_pieces(pattern):
        if i < skip_to:
            continue
        if piece == "(" and pattern.startswith("(?P<", i):
            skip_to = pattern.index(">", i) + 1           # drop the user's group name
            piece = "(?P<session>"
        elif piece == "(" and not pattern.startswith("(?", i):
            piece = "(?P<session>"
        out.append(piece)
    return "".join(out)
