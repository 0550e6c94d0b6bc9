"""Text of the corpus: BGL-layout lines from per-line fields, and the bad lines of corrupt mode."""
from __future__ import annotations

import datetime as _dt

import numpy as np


class DayNames:
    """``day -> ("2005.06.03", "2005-06-03")``: the two date spellings of a BGL line, cached per day."""

    def __init__(self) -> None:
        self.cache: dict[int, tuple[str, str]] = {}

    def __call__(self, day: int) -> tuple[str, str]:
        hit = self.cache.get(day)
        if hit is None:
            d = _dt.datetime.fromtimestamp(day * 86400, tz=_dt.timezone.utc)
            hit = (d.strftime("%Y.%m.%d"), d.strftime("%Y-%m-%d"))
            if len(self.cache) > 64:
                self.cache.clear()
            self.cache[day] = hit
        return hit


def format_lines(lab: list, sec: np.ndarray, us: np.ndarray, nodes: list, heads: list,
                 contents: list[str], days: DayNames) -> list[str]:
    """One BGL line per element: label, epoch second, dates, node, microsecond time, header, content."""
    day = sec // 86400
    sod = sec - day * 86400
    hh, rem = np.divmod(sod, 3600)
    mm, ss = np.divmod(rem, 60)
    dot_s = np.empty(sec.size, dtype=object)
    dash_s = np.empty(sec.size, dtype=object)
    for d in np.unique(day).tolist():
        m = day == d
        dot, dash = days(d)
        dot_s[m] = dot
        dash_s[m] = dash
    return [f"{l} {s} {dd} {nd} {dh}-{h:02d}.{m_:02d}.{s_:02d}.{u:06d} {nd} {hd}{c}"
            for l, s, dd, nd, dh, h, m_, s_, u, hd, c in zip(
                lab, sec.tolist(), dot_s.tolist(), nodes, dash_s.tolist(), hh.tolist(), mm.tolist(),
                ss.tolist(), us.tolist(), heads, contents)]


def corrupt_line(kind: str, sec: int, rng: np.random.Generator, days: DayNames) -> str:
    """A bad line as str; undecodable bytes are carried as surrogates (written with surrogateescape)."""
    dot, dash = days(sec // 86400)
    sod = sec % 86400
    t = f"{dash}-{sod // 3600:02d}.{sod % 3600 // 60:02d}.{sod % 60:02d}.000000"
    node = "R00-M0-N0-C:J02-U01"
    if kind == "undecodable_bytes":
        return (f"- {sec} {dot} {node} {t} {node} RAS KERNEL INFO corrupted payload "
                "\udcff\udcfe\udc80 end of record")
    if kind == "header_mismatch":
        return f"%%GARBAGE%%{int(rng.integers(1 << 30)):08x}%%not-a-log-record"
    if kind == "empty_line":
        return ""
    if kind == "bad_timestamp":
        return f"- 11x{sec}z {dot} {node} {t} {node} RAS KERNEL INFO timestamp field is not a number"
    raise ValueError(kind)

