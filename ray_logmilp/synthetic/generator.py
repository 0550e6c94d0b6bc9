"""Synthetic BGL-layout log corpora with known anomalous lines, for LogMILP experiments and tests.

``generate(SyntheticConfig(...), out_dir)`` streams a corpus to ``out_dir`` in fixed-size blocks, so
memory stays flat whatever the line count, and the output is byte-identical for the same config:

- ``corpus.log`` (or ``corpus.log.gz``): one line per event in the CFDR/BGL layout
  ``<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>``;
  label ``-`` for normal lines, a BGL alert tag (``KERNDTLB``, ``APPSEV``, ...) for anomalous lines.
- ``alarms.csv``: ``start,end`` epoch seconds of every anomaly episode, padded like an operator's alarm.
- ``episodes.csv``: one row per episode with its kind, the line numbers that carry the label and
  the line numbers of the context that makes them anomalous (for localization checks).
- ``truth.json``: the config, line/label counts, episodes and labelled lines per kind, the hard-case
  counts, the template inventory and (corrupt mode) the bad lines planted.
- ``template_ids.i32`` (only with ``write_template_ids``): little-endian int32 template id per valid
  line, in file order, for parser grouping-accuracy checks.

The anomaly kinds and exactly which line carries the label are documented in ``docs/synthetic.md``.

CLI: ``python -m ray_logmilp.synthetic --out DIR --lines 1000000 --seed 0 [--gzip] [--corrupt]``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import gzip
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["SyntheticConfig", "Template", "build_templates", "generate", "main", "ANOMALY_KINDS",
           "CORRUPT_KINDS"]

#: Episode kinds, in the order used for ``kind_weights``.
ANOMALY_KINDS: tuple[str, ...] = ("rare", "contextual", "cooccur", "order")
#: Kinds of bad lines planted in corrupt mode (names follow the quarantine reasons of formats.py).
CORRUPT_KINDS: tuple[str, ...] = ("undecodable_bytes", "header_mismatch", "empty_line", "bad_timestamp")

_NEG = -(1 << 40)  # "no occurrence" sentinel for last-seen position arrays


# --------------------------------------------------------------------------------------------- config
@dataclass
class SyntheticConfig:
    """Everything that shapes a synthetic corpus. Same config (seed included) → same bytes."""

    n_lines: int = 100_000
    """Number of valid log lines to write (corrupt lines, if any, come on top)."""
    seed: int = 0
    """Master seed; templates, traffic, episodes and corrupt lines all derive from it."""
    n_templates: int = 300
    """Number of procedurally built *normal background* templates (anomaly/context templates are extra)."""
    zipf_exponent: float = 1.1
    """Background template frequencies follow rank^-zipf_exponent (rank 1 = most frequent)."""
    lines_per_second: float = 1.0
    """Mean arrival rate of ordinary lines (exponential gaps); burst lines arrive much faster."""
    start_time: int = 1117838570
    """Epoch seconds of the first line (default: the first line of Loghub's BGL sample)."""
    episode_rate: float = 4.5
    """Expected anomaly episodes per 1,000 lines. 4.5 makes ~25% of 64-line windows positive."""
    kind_weights: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)
    """Relative frequency of the episode kinds (rare, contextual, cooccur, order)."""
    labelled_per_episode_weights: tuple[float, float, float] = (0.55, 0.30, 0.15)
    """Probability that an episode carries 1, 2 or 3 labelled lines."""
    n_rare_templates: int = 24
    """Anomaly templates that never occur in normal traffic (kind ``rare``)."""
    n_context_pairs: int = 8
    """(trigger, anomaly) template pairs of kind ``contextual``; both also occur alone, benignly."""
    context_benign_rate: float = 2.0
    """Benign occurrences per 1,000 lines of the contextual anomaly templates (all pairs together);
    the triggers occur alone at the same rate."""
    n_cooccur_pairs: int = 4
    """(X, Y) pairs of common templates that are benign alone but anomalous together (kind ``cooccur``)."""
    cooccur_benign_rate: float = 2.5
    """Benign occurrences per 1,000 lines of *each* co-occurrence template."""
    n_order_pairs: int = 6
    """(open, close) template pairs: close always follows its open in normal traffic (kind ``order``)."""
    order_pair_rate: float = 12.0
    """Normal open→close pairs per 1,000 lines (all pairs together)."""
    order_max_gap: int = 3
    """In normal traffic a close follows its open by 1..order_max_gap lines."""
    order_reversed_fraction: float = 0.4
    """Fraction of ``order`` episodes that are out-of-order (close then open) instead of a missing open."""
    context_lines: int = 10
    """The context that defines an anomaly (trigger, X, ...) lies at most this many lines before the
    labelled line."""
    clean_lines: int = 12
    """Benign traffic never shows an anomaly's defining context within this many lines (> context_lines,
    so that the normal and anomalous cases are separated by a margin)."""
    burst_rate: float = 3.0
    """Distractor bursts per 1,000 lines: runs of one frequent template, independent of anomalies."""
    burst_length: tuple[int, int] = (10, 30)
    """Inclusive range of burst lengths (lines)."""
    burst_top_k: int = 20
    """Bursts repeat one of the burst_top_k most frequent background templates."""
    burst_speedup: float = 50.0
    """Lines inside a burst arrive burst_speedup times faster than ordinary lines."""
    n_nodes: int = 1024
    """Number of distinct BGL node locations in the Node column."""
    alarm_pad_seconds: float = 5.0
    """Alarms extend each episode by about this many seconds on each side (jittered 0.5x–1.5x)."""
    report_window_lines: int = 64
    """Fixed-count window size (lines) for the positive-window fraction reported in the summary."""
    report_window_seconds: int = 60
    """Time window size (seconds) for the positive-window fraction reported in the summary."""
    gzip: bool = False
    """Write ``corpus.log.gz`` (deterministic gzip header) instead of ``corpus.log``."""
    corrupt: bool = False
    """Plant bad lines (invalid UTF-8, header mismatch, blank, bad timestamp) listed in truth.json."""
    corrupt_per_kind: int = 2
    """With corrupt=True: how many bad lines of each kind to plant."""
    write_template_ids: bool = False
    """Also write ``template_ids.i32`` (int32 template id per valid line) for parser accuracy checks."""
    block_lines: int = 65536
    """Lines generated per block (rounded up to a multiple of report_window_lines). Part of the
    definition of the corpus: changing it changes the bytes."""

    def __post_init__(self) -> None:
        self.kind_weights = tuple(float(w) for w in self.kind_weights)  # type: ignore[assignment]
        self.labelled_per_episode_weights = tuple(  # type: ignore[assignment]
            float(w) for w in self.labelled_per_episode_weights)
        self.burst_length = tuple(int(v) for v in self.burst_length)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the offending field when a value is out of range."""
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"SyntheticConfig.{name}={getattr(self, name)!r}: {what}")

        need(self.n_lines >= 1, "n_lines", "must be >= 1")
        need(self.n_templates >= self.burst_top_k >= 1, "n_templates", "must be >= burst_top_k >= 1")
        need(self.zipf_exponent > 0, "zipf_exponent", "must be > 0")
        need(self.lines_per_second > 0, "lines_per_second", "must be > 0")
        need(self.start_time >= 0, "start_time", "must be >= 0 (epoch seconds)")
        need(0 <= self.episode_rate <= 20, "episode_rate", "must be in [0, 20] episodes per 1,000 lines")
        need(len(self.kind_weights) == len(ANOMALY_KINDS) and min(self.kind_weights) >= 0
             and sum(self.kind_weights) > 0, "kind_weights",
             f"needs {len(ANOMALY_KINDS)} non-negative weights for {ANOMALY_KINDS}, not all zero")
        need(len(self.labelled_per_episode_weights) == 3 and min(self.labelled_per_episode_weights) >= 0
             and sum(self.labelled_per_episode_weights) > 0, "labelled_per_episode_weights",
             "needs 3 non-negative weights (1, 2, 3 labelled lines), not all zero")
        for name in ("n_rare_templates", "n_context_pairs", "n_cooccur_pairs", "n_order_pairs"):
            need(1 <= getattr(self, name) <= 64, name, "must be in [1, 64]")
        for name in ("context_benign_rate", "cooccur_benign_rate", "order_pair_rate", "burst_rate"):
            need(0 <= getattr(self, name) <= 100, name, "must be in [0, 100] per 1,000 lines")
        need(1 <= self.order_max_gap <= 5, "order_max_gap", "must be in [1, 5]")
        need(0 <= self.order_reversed_fraction <= 1, "order_reversed_fraction", "must be in [0, 1]")
        need(9 <= self.context_lines <= 30, "context_lines", "must be in [9, 30]")
        need(self.context_lines < self.clean_lines <= 40, "clean_lines", "must be in (context_lines, 40]")
        need(len(self.burst_length) == 2 and 2 <= self.burst_length[0] <= self.burst_length[1] <= 200,
             "burst_length", "must be (lo, hi) with 2 <= lo <= hi <= 200")
        need(self.burst_speedup >= 1, "burst_speedup", "must be >= 1")
        need(self.n_nodes >= 1, "n_nodes", "must be >= 1")
        need(self.alarm_pad_seconds >= 0, "alarm_pad_seconds", "must be >= 0")
        need(self.report_window_lines >= 1, "report_window_lines", "must be >= 1")
        need(self.report_window_seconds >= 1, "report_window_seconds", "must be >= 1")
        need(self.corrupt_per_kind >= 0, "corrupt_per_kind", "must be >= 0")
        need(1024 <= self.block_lines <= 4_000_000, "block_lines", "must be in [1024, 4000000]")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


# ------------------------------------------------------------------------------------------ templates
@dataclass(frozen=True)
class Template:
    """One log template: fixed words with parameter slots, plus the BGL columns it is logged with."""

    id: int
    role: str
    """normal | rare | trigger | context_anomaly | cooccur_x | cooccur_y | open | close"""
    group: int
    """Pair index for paired roles (trigger/context_anomaly, cooccur_x/y, open/close); -1 otherwise."""
    fmt: str
    """``str.format`` pattern, one ``{}`` per slot."""
    slots: tuple[str, ...]
    """Parameter kind per slot: num1..num9 (digits), hex, ip, node, path."""
    component: str
    level: str
    tag: str
    """Alert tag written in the Label column when an occurrence is labelled anomalous ('' if never)."""

    @property
    def text(self) -> str:
        """The template with ``<*>`` for each parameter."""
        return self.fmt.replace("{}", "<*>")

    def to_dict(self) -> dict:
        return {"id": self.id, "role": self.role, "group": self.group, "text": self.text,
                "component": self.component, "level": self.level, "tag": self.tag or None}


_NOUNS = """cache torus tree collective network ciod kernel node link card fan power supply voltage clock sensor
temperature interrupt scheduler daemon ethernet switch packet buffer queue thread process file directory mount disk
controller memory ddr dram sram dma channel port socket session partition block midplane rack service job loader
program image rts console message stream descriptor signal timer watchdog counter register table page segment
heap stack frame checkpoint snapshot journal ledger record barrier mutex lock semaphore token credential key
certificate license policy route gateway bridge tunnel proxy mailbox inbox cursor index catalog manifest bundle
archive volume filesystem inode superblock extent quota cgroup namespace container pod replica shard lease
beacon heartbeat pulse probe monitor collector agent relay broker topic partitioner consumer producer
pipeline stage worker executor dispatcher allocator reaper janitor sweeper compactor indexer crawler resolver
ecc parity capacitor regulator thermistor blower chassis backplane midplane nodecard servicecard linkcard
idoproxy mmcs bglmaster dbserver firmware bootloader microcode personality torusdriver fpu alu tlb""".split()
_ADJS = """primary secondary local remote virtual physical nominal periodic background transient pending idle
active passive stale fresh cold warm hot redundant spare degraded healthy partial full empty dirty clean
global private shared exclusive readonly writable volatile persistent ephemeral internal external upstream
downstream inbound outbound lower upper inner outer early late rapid slow minor major auxiliary principal""".split()
_VERBS = """initialized detected corrected received sent loaded registered updated scanned checked flushed
allocated released connected polled reset configured enabled disabled refreshed rotated synchronized
validated computed measured sampled queued dequeued scheduled dispatched accepted rejected acknowledged
throttled resumed suspended migrated replicated compacted indexed archived restored rebuilt calibrated
adjusted negotiated advertised discovered probed mapped unmapped pinned unpinned tagged untagged""".split()
_PREPS = "on for from to at in with after by via under over into onto".split()
_ADVS = """successfully normally quietly promptly again twice already still partially eventually silently
gracefully immediately lazily eagerly""".split()
_KEYS = """rank pid uid gid jobid slot lane port seq len cnt rc id core mask addr offset size vc lun bus""".split()
_DAEMONS = """ciod: idoproxydb: mmcs_db_server: BGLMASTER: ciodb: monitor: sysctl: rtsd: dbpoll: linkmon:
envmon: cmcs:""".split()
_OPEN_VERBS = "started opened begun launched entered acquired mounted attached spawned armed".split()
_CLOSE_VERBS = "finished closed ended completed exited released unmounted detached reaped disarmed".split()
_WARN_ADJS = """correctable uncorrectable excessive unexpected abnormal missing invalid inconsistent
overdue stalled lost duplicate malformed corrupted unaligned unreachable""".split()
_WARN_VERBS = "exceeded failed timed-out dropped refused aborted overflowed mismatched diverged stalled".split()
_FAIL_WORDS = """panic fatal machine-check failure fault crash halt lockup deadlock corruption abort
segfault exception hang""".split()
_COMPONENTS = ("KERNEL", "KERNEL", "KERNEL", "KERNEL", "APP", "MMCS", "LINKCARD", "DISCOVERY", "MONITOR",
               "HARDWARE", "BGLMASTER", "CMCS", "SERV_NET")
_NORMAL_LEVELS = (("INFO", 0.80), ("WARNING", 0.08), ("ERROR", 0.05), ("SEVERE", 0.03), ("FATAL", 0.04))
_ALERT_LEVELS = (("FATAL", 0.40), ("SEVERE", 0.20), ("ERROR", 0.20), ("FAILURE", 0.05), ("INFO", 0.15))
_TAGS = """KERNDTLB KERNSTOR APPSEV KERNMNTF KERNTERM KERNREC APPREAD KERNRTSP APPRES LINKBLL MMCS APPUNAV
KERNMC KERNPAN KERNBIT KERNSOCK KERNPOW APPOUT APPTO APPCHILD APPALLOC KERNEXT KERNMICE KERNFSHD KERNCON
KERNSERV LINKDISC LINKIAP LINKPAP MASABNORM MONILL MONNULL MONPOW KERNNOETH APPBUSY""".split()
_SLOT_KINDS = ("num1", "num2", "num3", "num4", "num6", "num9", "hex", "ip", "node", "path")


class _TemplateFactory:
    """Builds templates whose fixed words differ enough that Drain (sim_th 0.5) keeps them apart."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.made: list[Template] = []
        self.by_len: dict[int, list[tuple[str, ...]]] = {}
        self.seen_masked: set[str] = set()

    def _pick(self, pool: Sequence[str]) -> str:
        return pool[int(self.rng.integers(len(pool)))]

    def _choice(self, weighted: Sequence[tuple[str, float]]) -> str:
        p = np.array([w for _, w in weighted], dtype=float)
        return weighted[int(self.rng.choice(len(weighted), p=p / p.sum()))][0]

    def _slot(self) -> str:
        return self._pick(_SLOT_KINDS)

    def _clauses(self, n: int, max_slots: int) -> list[tuple[str, str | None]]:
        """Trailing clauses as (token, slot kind or None) pairs; tokens with a slot hold '{}'."""
        out: list[tuple[str, str | None]] = []
        slots = 0
        for _ in range(n):
            r = self.rng.random()
            want_slot = slots < max_slots
            if r < 0.25 and want_slot:
                out += [(self._pick(_PREPS), None), (self._pick(_NOUNS), None), ("{}", self._slot())]
                slots += 1
            elif r < 0.40 and want_slot:
                out += [(self._pick(_PREPS), None), ("{}", self._slot())]
                slots += 1
            elif r < 0.55 and want_slot:
                out += [(self._pick(_KEYS) + "={}", self._pick(("num1", "num2", "num3", "num4", "num6", "hex")))]
                slots += 1
            elif r < 0.70:
                out += [(self._pick(_ADVS), None)]
            else:
                out += [(self._pick(_PREPS), None), (self._pick(_ADJS), None), (self._pick(_NOUNS), None)]
        return out

    def _accept(self, toks: list[tuple[str, str | None]]) -> bool:
        words = tuple(t for t, s in toks)
        n_fixed = sum(1 for t, s in toks if s is None)
        n_slots = len(toks) - n_fixed
        if n_fixed < n_slots + 2 or len(toks) < 2 or len(toks) > 24:
            return False
        if any(s is not None for _, s in toks[:2]):  # parameters never in Drain's prefix-tree tokens
            return False
        masked = " ".join(words)
        if masked in self.seen_masked:
            return False
        fixed = tuple(t if s is None else None for t, s in toks)
        for other in self.by_len.get(len(words), ()):
            same = sum(1 for a, b in zip(fixed, other) if a is not None and a == b)
            if same / len(words) >= 0.4:
                return False
        return True

    def add(self, toks: list[tuple[str, str | None]], role: str, group: int, alert: bool) -> Template | None:
        """Register a template if distinct enough. ``alert``: it gets an alert tag (used on its labelled
        occurrences); only the roles that never or seldom occur benignly get an alert-like Level."""
        if not self._accept(toks):
            return None
        words = tuple(t for t, s in toks)
        self.seen_masked.add(" ".join(words))
        self.by_len.setdefault(len(words), []).append(tuple(t if s is None else None for t, s in toks))
        tpl = Template(
            id=len(self.made), role=role, group=group, fmt=" ".join(words),
            slots=tuple(s for _, s in toks if s is not None),
            component=self._pick(_COMPONENTS),
            level=self._choice(_ALERT_LEVELS if role in ("rare", "context_anomaly") else _NORMAL_LEVELS),
            tag=self._pick(_TAGS) if alert else "")
        self.made.append(tpl)
        return tpl

    def build(self, maker: Callable[[], list[tuple[str, str | None]]], role: str, group: int,
              alert: bool) -> Template:
        for _ in range(10_000):
            tpl = self.add(maker(), role, group, alert)
            if tpl is not None:
                return tpl
        raise RuntimeError(f"could not build a distinct {role} template; reduce the template counts")

    # -- makers: each returns a token list
    def normal(self) -> list[tuple[str, str | None]]:
        toks: list[tuple[str, str | None]] = []
        if self.rng.random() < 0.3:
            toks.append((self._pick(_DAEMONS), None))
        if self.rng.random() < 0.5:
            toks.append((self._pick(_ADJS), None))
        toks.append((self._pick(_NOUNS), None))
        if self.rng.random() < 0.4:
            toks.append((self._pick(_NOUNS), None))
        toks.append((self._pick(_VERBS), None))
        toks += self._clauses(int(self.rng.integers(0, 5)), max_slots=3)
        return toks

    def paired(self, head: list[tuple[str, str | None]], verbs: Sequence[str], n_clauses: int
               ) -> list[tuple[str, str | None]]:
        return head + [(self._pick(verbs), None)] + self._clauses(n_clauses, max_slots=2)

    def warn(self) -> list[tuple[str, str | None]]:
        toks = [(self._pick(_WARN_ADJS), None), (self._pick(_NOUNS), None)]
        if self.rng.random() < 0.5:
            toks.append((self._pick(_NOUNS), None))
        toks.append((self._pick(_WARN_VERBS), None))
        return toks + self._clauses(int(self.rng.integers(1, 4)), max_slots=2)

    def fail(self) -> list[tuple[str, str | None]]:
        toks = [(self._pick(_NOUNS), None), (self._pick(_FAIL_WORDS), None)]
        if self.rng.random() < 0.5:
            toks.append((self._pick(_WARN_ADJS), None))
        toks.append((self._pick(_NOUNS), None))
        return toks + self._clauses(int(self.rng.integers(0, 4)), max_slots=2)


def build_templates(config: SyntheticConfig) -> list[Template]:
    """The template inventory of a config (deterministic in config.seed). Ids are dense, 0..T-1:
    normal background templates first (ordered by decreasing frequency), then the special roles."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xC0FFEE]))
    f = _TemplateFactory(rng)
    for _ in range(config.n_templates):
        f.build(f.normal, "normal", -1, alert=False)
    for g in range(config.n_order_pairs):
        head: list[tuple[str, str | None]] = []
        if rng.random() < 0.5:
            head.append((f._pick(_DAEMONS), None))
        head += [(f._pick(_NOUNS), None), (f._pick(_NOUNS), None)]
        n_open = int(rng.integers(0, 3))
        f.build(lambda: f.paired(head, _OPEN_VERBS, n_open), "open", g, alert=False)
        # A different token count from its open: Drain splits by length first, so the two never merge.
        opener = f.made[-1]
        for _ in range(10_000):
            toks = f.paired(head, _CLOSE_VERBS, int(rng.integers(0, 4)))
            if len(toks) != len(opener.fmt.split(" ")):
                tpl = f.add(toks, "close", g, alert=True)
                if tpl is not None:
                    break
        else:
            raise RuntimeError("could not build a close template")
    for g in range(config.n_context_pairs):
        f.build(f.warn, "trigger", g, alert=False)
        f.build(f.fail, "context_anomaly", g, alert=True)
    for g in range(config.n_cooccur_pairs):
        f.build(f.normal, "cooccur_x", g, alert=False)
        f.build(f.normal, "cooccur_y", g, alert=True)
    for _ in range(config.n_rare_templates):
        f.build(f.fail, "rare", -1, alert=True)
    return f.made


# ----------------------------------------------------------------------------------- parameter pools
def _node_name(i: int) -> str:
    rack, rem = divmod(i, 128)
    mid, rem = divmod(rem, 64)
    nc, rem = divmod(rem, 4)
    j = rem
    return f"R{rack % 64:02d}-M{mid}-N{nc:X}-C:J{(j * 4 + 2) % 18:02d}-U{1 + (i % 2)}{i % 10}"


class _Pools:
    """Per-seed value pools for the string-valued parameters."""

    def __init__(self, config: SyntheticConfig):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xB00C]))
        self.nodes = np.array([_node_name(i) for i in range(config.n_nodes)], dtype=object)
        ips = rng.integers(1, 255, size=(512, 4))
        ips[:, 0] = rng.choice([10, 172, 192], size=512)
        self.ips = np.array([".".join(map(str, r)) for r in ips.tolist()], dtype=object)
        users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
                 "mallory", "oscar", "peggy", "trent", "victor", "walter"]
        dirs = ["RAPTOR", "run", "scratch", "ckpt", "out", "data", "bin", "tmp"]
        self.paths = np.array(
            [f"/p/gb{rng.integers(1, 5)}/{users[rng.integers(len(users))]}/{dirs[rng.integers(len(dirs))]}"
             f"/{rng.integers(0, 100000)}/" for _ in range(2048)], dtype=object)

    def values(self, kind: str, rng: np.random.Generator, n: int) -> list[str]:
        if kind.startswith("num"):
            hi = 10 ** int(kind[3:])
            return list(map(str, rng.integers(0, hi, size=n).tolist()))
        if kind == "hex":
            return list(map("0x{:08x}".format, rng.integers(0, 1 << 32, size=n, dtype=np.int64).tolist()))
        pool = {"ip": self.ips, "node": self.nodes, "path": self.paths}[kind]
        return pool[rng.integers(0, len(pool), size=n)].tolist()


# ----------------------------------------------------------------------------------------- generator
def _last_before(mask: np.ndarray) -> np.ndarray:
    """For each position p, the largest q < p with mask[q], else _NEG."""
    n = mask.shape[0]
    idx = np.where(mask, np.arange(n, dtype=np.int64), _NEG)
    last = np.maximum.accumulate(idx)
    out = np.empty(n, dtype=np.int64)
    out[0] = _NEG
    out[1:] = last[:-1]
    return out


class _State:
    """Counters and carried context across blocks."""

    def __init__(self) -> None:
        self.t_us = 0                      # time of the last line written (µs since epoch)
        self.logical = 0                   # valid lines written so far
        self.physical = 0                  # physical lines written so far (valid + corrupt)
        self.tail_ids = np.empty(0, dtype=np.int32)
        self.tail_lab = np.empty(0, dtype=bool)
        self.episode_id = 0
        self.counts: dict[str, int] = {}
        self.episodes_by_kind = {k: 0 for k in ANOMALY_KINDS}
        self.labelled_by_kind = {k: 0 for k in ANOMALY_KINDS}
        self.order_variants = {"missing_open": 0, "reversed": 0}
        self.bursts = {"total": 0, "in_positive_window": 0, "in_negative_window": 0}
        self.fixed_windows = 0
        self.fixed_positive = 0
        self.time_last_window: int | None = None
        self.time_windows = 0
        self.time_pos_last: int | None = None
        self.time_positive = 0
        self.tag_counts: dict[str, int] = {}

    def bump(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n)


class _Generator:
    def __init__(self, config: SyntheticConfig):
        self.cfg = config
        self.templates = build_templates(config)
        self.pools = _Pools(config)
        T = self.templates
        self.normal_ids = np.array([t.id for t in T if t.role == "normal"], dtype=np.int32)
        ranks = np.arange(1, len(self.normal_ids) + 1, dtype=np.float64)
        p = ranks ** -config.zipf_exponent
        self.normal_p = p / p.sum()
        self.normal_cdf = np.cumsum(self.normal_p)
        self.normal_cdf[-1] = 1.0

        def ids(role: str) -> np.ndarray:
            return np.array([t.id for t in T if t.role == role], dtype=np.int32)

        self.open_ids, self.close_ids = ids("open"), ids("close")
        self.trig_ids, self.ctx_ids = ids("trigger"), ids("context_anomaly")
        self.x_ids, self.y_ids = ids("cooccur_x"), ids("cooccur_y")
        self.rare_ids = ids("rare")
        self.fmts = [t.fmt for t in T]
        self.slots = [t.slots for t in T]
        self.heads = np.array([f"RAS {t.component} {t.level} " for t in T], dtype=object)
        self.tags = np.array([t.tag or "-" for t in T], dtype=object)
        kw = np.array(config.kind_weights, dtype=float)
        self.kind_p = kw / kw.sum()
        lw = np.array(config.labelled_per_episode_weights, dtype=float)
        self.nlab_p = lw / lw.sum()
        # the longest episode: 1 context line + 3 labelled lines 3 apart + (reversed) 3 opens
        self.max_span = 1 + 3 * 3 + 3 * 3 + 2
        self.min_episode_gap = self.max_span + config.clean_lines + 2
        self.margin = max(self.max_span, config.burst_length[1], config.order_max_gap + 1) + 2

    # -- background
    def _background(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n)
        return self.normal_ids[np.searchsorted(self.normal_cdf, u, side="right").clip(0, len(self.normal_ids) - 1)]

    def _positions(self, rng: np.random.Generator, n: int, rate_per_1k: float, hi: int) -> np.ndarray:
        """Random positions in [0, hi) with expected density rate_per_1k per 1,000 lines."""
        if rate_per_1k <= 0 or hi <= 0:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(rng.random(hi) < rate_per_1k / 1000.0)

    def block(self, rng: np.random.Generator, n: int, st: _State):
        """Template ids, labels, burst flags, node indices and episode records for one block."""
        cfg = self.cfg
        C = cfg.clean_lines
        hi = n - self.margin  # structures start before this so they end inside the block
        ids = self._background(rng, n)
        node = rng.integers(0, cfg.n_nodes, size=n)

        # 1. normal open→close pairs
        pos = self._positions(rng, n, cfg.order_pair_rate, hi)
        g = rng.integers(0, len(self.open_ids), size=pos.size)
        gap_p = np.array([0.6, 0.3, 0.1, 0.05, 0.05][:cfg.order_max_gap])
        gap = 1 + rng.choice(cfg.order_max_gap, size=pos.size, p=gap_p / gap_p.sum())
        ids[pos] = self.open_ids[g]
        ids[pos + gap] = self.close_ids[g]
        node[pos + gap] = node[pos]
        # 2. benign co-occurrence templates, alone
        for arr in (self.x_ids, self.y_ids):
            pos = self._positions(rng, n, cfg.cooccur_benign_rate * len(arr), hi)
            ids[pos] = arr[rng.integers(0, len(arr), size=pos.size)]
        # 3. benign contextual anomaly templates and triggers, alone
        for arr in (self.trig_ids, self.ctx_ids):
            pos = self._positions(rng, n, cfg.context_benign_rate, hi)
            ids[pos] = arr[rng.integers(0, len(arr), size=pos.size)]
        # 4. distractor bursts: a run of one frequent template, arriving fast
        burst_cont = np.zeros(n, dtype=bool)  # line inside a burst, after its first line
        bpos = self._positions(rng, n, cfg.burst_rate, hi)
        blen = rng.integers(cfg.burst_length[0], cfg.burst_length[1] + 1, size=bpos.size)
        btpl = self.normal_ids[rng.integers(0, cfg.burst_top_k, size=bpos.size)]
        for s, L, b in zip(bpos.tolist(), blen.tolist(), btpl.tolist()):
            ids[s:s + L] = b
            burst_cont[s + 1:s + L] = True
            node[s + 1:s + L] = node[s]
        # 5. anomaly episodes (planted last; their lines are protected)
        labelled = np.zeros(n, dtype=bool)
        protected = np.zeros(n, dtype=bool)
        episodes = []
        if cfg.episode_rate > 0:
            mean_gap = 1000.0 / cfg.episode_rate
            extra = max(mean_gap - self.min_episode_gap, 1.0)
            k_max = int(n / self.min_episode_gap) + 2
            gaps = self.min_episode_gap + rng.geometric(1.0 / extra, size=k_max) - 1
            starts = np.cumsum(gaps)
            starts = starts[starts < hi]
            kinds = rng.choice(len(ANOMALY_KINDS), size=starts.size, p=self.kind_p)
            nlabs = 1 + rng.choice(3, size=starts.size, p=self.nlab_p)
            for s, k, nl in zip(starts.tolist(), kinds.tolist(), nlabs.tolist()):
                episodes.append(self._plant(rng, ids, labelled, protected, node, s, ANOMALY_KINDS[k], nl))

        # 6. cleanup: benign traffic must never show an anomaly's defining context
        T0 = st.tail_ids.size
        all_ids = np.concatenate([st.tail_ids, ids])
        all_lab = np.concatenate([st.tail_lab, labelled])
        fixed = np.concatenate([np.ones(T0, dtype=bool), protected])  # not to be replaced
        removed = np.zeros(all_ids.size, dtype=bool)
        for trig, anom in zip(self.trig_ids.tolist(), self.ctx_ids.tolist()):
            lb = _last_before(all_ids == trig)
            removed |= (all_ids == anom) & ~all_lab & (np.arange(all_ids.size) - lb <= C)
        for x, y in zip(self.x_ids.tolist(), self.y_ids.tolist()):
            ar = np.arange(all_ids.size)
            removed |= (all_ids == y) & ~all_lab & (ar - _last_before(all_ids == x) <= C)
            removed |= (all_ids == x) & ~all_lab & (ar - _last_before(all_ids == y) <= C)
        for o, c in zip(self.open_ids.tolist(), self.close_ids.tolist()):
            ar = np.arange(all_ids.size)
            removed |= (all_ids == c) & ~all_lab & (ar - _last_before(all_ids == o) > cfg.order_max_gap)
        removed &= ~fixed
        rem = np.flatnonzero(removed[T0:])
        if rem.size:
            ids[rem] = self._background(rng, rem.size)
        st.bump("cleanup_replaced", rem.size)
        return ids, labelled, burst_cont, node, episodes, bpos, blen

    def _plant(self, rng, ids, labelled, protected, node, s: int, kind: str, nl: int) -> dict:
        """Write one episode starting at block position s; returns its record (block positions)."""
        C = self.cfg.clean_lines
        step = lambda: int(rng.integers(1, 4))  # noqa: E731  (1..3 lines between episode lines)
        lab_pos: list[int] = []
        ctx_pos: list[int] = []
        variant = ""
        scrub: list[int] = []  # template ids that must not occur in the clean zone before s
        if kind == "rare":
            p = s
            for i in range(nl):
                ids[p] = self.rare_ids[int(rng.integers(len(self.rare_ids)))]
                lab_pos.append(p)
                p += step()
        elif kind == "contextual":
            gi = int(rng.integers(len(self.trig_ids)))
            ids[s] = self.trig_ids[gi]
            ctx_pos.append(s)
            p = s
            for i in range(nl):
                p += step()
                ids[p] = self.ctx_ids[gi]
                lab_pos.append(p)
            scrub = [int(self.trig_ids[gi]), int(self.ctx_ids[gi])]
        elif kind == "cooccur":
            gi = int(rng.integers(len(self.x_ids)))
            ids[s] = self.x_ids[gi]
            ctx_pos.append(s)
            p = s
            for i in range(nl):
                p += step()
                ids[p] = self.y_ids[gi]
                lab_pos.append(p)
            scrub = [int(self.x_ids[gi]), int(self.y_ids[gi])]
        else:  # order
            nl = min(nl, len(self.close_ids))
            gs = rng.choice(len(self.close_ids), size=nl, replace=False).tolist()
            variant = "reversed" if rng.random() < self.cfg.order_reversed_fraction else "missing_open"
            p = s
            for i, gi in enumerate(gs):
                if i:
                    p += step()
                ids[p] = self.close_ids[gi]
                lab_pos.append(p)
            if variant == "reversed":
                for gi in gs:
                    p += step()
                    ids[p] = self.open_ids[gi]
                    ctx_pos.append(p)
            scrub = [int(self.open_ids[gi]) for gi in gs]
        end = max(lab_pos + ctx_pos)
        lo = max(s - C, 0)
        for q in lab_pos + ctx_pos:
            protected[q] = True
        labelled[lab_pos] = True
        if scrub:
            # no open (order) / no trigger, X, Y (pairs) of this episode within C lines before it, and
            # none between its own lines
            zone = np.arange(lo, end + 1)
            zone = zone[~protected[zone]]
            bad = zone[np.isin(ids[zone], scrub)]
            if bad.size:
                ids[bad] = self._background(rng, bad.size)
        node[s:end + 1] = node[s]
        return {"kind": kind, "variant": variant, "start": s, "end": end, "labelled": lab_pos,
                "context": ctx_pos}

    # -- text
    def contents(self, rng: np.random.Generator, ids: np.ndarray) -> list[str]:
        n = ids.size
        out = np.empty(n, dtype=object)
        order = np.argsort(ids, kind="stable")
        sids = ids[order]
        bounds = np.flatnonzero(np.diff(sids)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [n]])
        for a, b in zip(starts.tolist(), ends.tolist()):
            tid = int(sids[a])
            idx = order[a:b]
            slots = self.slots[tid]
            fmt = self.fmts[tid]
            if not slots:
                out[idx] = fmt
            else:
                cols = [self.pools.values(kind, rng, b - a) for kind in slots]
                vals = list(map(fmt.format, *cols))
                tmp = np.empty(b - a, dtype=object)
                tmp[:] = vals
                out[idx] = tmp
        return out.tolist()


class _DayNames:
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


def _format_lines(lab: list, sec: np.ndarray, us: np.ndarray, nodes: list, heads: list,
                  contents: list[str], days: _DayNames) -> list[str]:
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


def _corrupt_line(kind: str, sec: int, rng: np.random.Generator, days: _DayNames) -> str:
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


# ------------------------------------------------------------------------------------------- generate
def generate(config: SyntheticConfig, out_dir: str | os.PathLike,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Write a synthetic corpus into ``out_dir`` (created if needed) and return a summary dict.

    ``progress(lines_done, lines_total)`` is called after every block when given.
    """
    config.validate()
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config
    gen = _Generator(cfg)
    st = _State()
    st.t_us = cfg.start_time * 1_000_000
    days = _DayNames()
    W = cfg.report_window_lines
    block = int(math.ceil(cfg.block_lines / W) * W)

    # corrupt lines: inserted before valid line index `at` (0-based); several may share an index
    crng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xBAD]))
    corrupt_plan: list[tuple[int, str]] = []
    if cfg.corrupt and cfg.corrupt_per_kind > 0:
        for kind in CORRUPT_KINDS:
            for at in crng.integers(0, cfg.n_lines, size=cfg.corrupt_per_kind).tolist():
                corrupt_plan.append((int(at), kind))
        corrupt_plan.sort()
    corrupt_done: list[dict] = []
    cp = 0

    corpus_name = "corpus.log.gz" if cfg.gzip else "corpus.log"
    raw = open(out / corpus_name, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) if cfg.gzip else None
    sink = gz if gz is not None else raw
    alarms_f = open(out / "alarms.csv", "w", newline="")
    alarms_f.write("start,end\n")
    ep_f = open(out / "episodes.csv", "w", newline="")
    ep_w = csv.writer(ep_f, lineterminator="\n")
    ep_w.writerow(["episode_id", "kind", "variant", "start_line", "end_line", "start_time", "end_time",
                   "labelled_lines", "context_lines", "labelled_templates"])
    tid_f = open(out / "template_ids.i32", "wb") if cfg.write_template_ids else None
    n_labelled = 0
    n_benign = {"context_anomaly": 0, "trigger": 0, "cooccur_x": 0, "cooccur_y": 0, "close": 0}
    role_codes = {r: i for i, r in enumerate(("normal", "rare", "trigger", "context_anomaly", "cooccur_x",
                                               "cooccur_y", "open", "close"))}
    role_arr = np.array([role_codes[t.role] for t in gen.templates], dtype=np.int8)
    tag_arr = gen.tags
    t_per_line = 1e6 / cfg.lines_per_second
    t_per_burst_line = t_per_line / cfg.burst_speedup
    Tw = cfg.report_window_seconds
    try:
        b_idx = 0
        while st.logical < cfg.n_lines:
            n = min(block, cfg.n_lines - st.logical)
            rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, b_idx]))
            if n >= 4 * gen.margin + gen.min_episode_gap:
                ids, labelled, burst_cont, node, episodes, bpos, blen = gen.block(rng, n, st)
            else:  # a tiny last block: background only
                ids = gen._background(rng, n)
                labelled = np.zeros(n, dtype=bool)
                burst_cont = np.zeros(n, dtype=bool)
                node = rng.integers(0, cfg.n_nodes, size=n)
                episodes, bpos, blen = [], np.empty(0, np.int64), np.empty(0, np.int64)
            # arrival times (µs), non-decreasing
            gaps = rng.exponential(1.0, size=n) * np.where(burst_cont, t_per_burst_line, t_per_line)
            t_us = st.t_us + np.cumsum(np.rint(gaps).astype(np.int64))
            st.t_us = int(t_us[-1])
            sec = t_us // 1_000_000
            us = t_us - sec * 1_000_000
            contents = gen.contents(rng, ids)
            lab = np.where(labelled, tag_arr[ids], "-").tolist()
            lines = _format_lines(lab, sec, us, gen.pools.nodes[node].tolist(), gen.heads[ids].tolist(),
                                  contents, days)
            # physical line numbers (1-based) of this block's valid lines, corrupt lines interleaved
            base_logical = st.logical
            ins: list[tuple[int, str]] = []
            while cp < len(corrupt_plan) and corrupt_plan[cp][0] < base_logical + n:
                ins.append(corrupt_plan[cp])
                cp += 1
            ins_at = np.array([a - base_logical for a, _ in ins], dtype=np.int64)
            phys = st.physical + 1 + np.arange(n) + np.searchsorted(ins_at, np.arange(n), side="right")
            if ins:
                out_lines: list[str] = []
                prev = 0
                for j, (a, kind) in enumerate(ins):
                    r = a - base_logical
                    out_lines.extend(lines[prev:r])
                    prev = r
                    out_lines.append(_corrupt_line(kind, int(sec[r]), crng, days))
                    corrupt_done.append({"line_no": st.physical + r + j + 1, "kind": kind})
                out_lines.extend(lines[prev:])
                lines = out_lines
            payload = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
            sink.write(payload)
            if tid_f is not None:
                tid_f.write(ids.astype("<i4").tobytes())

            # episodes → alarms.csv, episodes.csv
            prng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2, b_idx]))
            for ep in episodes:
                kind = ep["kind"]
                st.episodes_by_kind[kind] += 1
                st.labelled_by_kind[kind] += len(ep["labelled"])
                if kind == "order":
                    st.order_variants[ep["variant"]] += 1
                p_all = sorted(ep["labelled"] + ep["context"])
                t0 = int(t_us[p_all[0]]) / 1e6
                t1 = int(t_us[p_all[-1]]) / 1e6
                pad0, pad1 = (cfg.alarm_pad_seconds * prng.uniform(0.5, 1.5, size=2)).tolist()
                a0 = int(math.floor(t0 - pad0))
                a1 = int(math.ceil(t1 + pad1))
                alarms_f.write(f"{a0},{a1}\n")
                ep_w.writerow([st.episode_id, kind, ep["variant"], int(phys[ep["start"]]),
                               int(phys[ep["end"]]), int(sec[p_all[0]]), int(sec[p_all[-1]]),
                               " ".join(str(int(phys[q])) for q in ep["labelled"]),
                               " ".join(str(int(phys[q])) for q in ep["context"]),
                               " ".join(str(int(ids[q])) for q in ep["labelled"])])
                st.episode_id += 1

            # statistics
            n_lab_b = int(labelled.sum())
            n_labelled += n_lab_b
            roles_b = role_arr[ids]
            for r in n_benign:
                n_benign[r] += int(((roles_b == role_codes[r]) & ~labelled).sum())
            if n_lab_b:
                for tag, c in zip(*np.unique(tag_arr[ids[labelled]].astype(str), return_counts=True)):
                    st.tag_counts[str(tag)] = st.tag_counts.get(str(tag), 0) + int(c)
            # fixed windows (block is a multiple of W, so windows never straddle blocks)
            nw = int(math.ceil(n / W))
            pos_w = np.zeros(nw, dtype=bool)
            pos_w[np.flatnonzero(labelled) // W] = True
            st.fixed_windows += nw
            st.fixed_positive += int(pos_w.sum())
            for s, L in zip(bpos.tolist(), blen.tolist()):
                st.bursts["total"] += 1
                key = "in_positive_window" if pos_w[s // W] or pos_w[(s + L - 1) // W] else "in_negative_window"
                st.bursts[key] += 1
            # time windows: non-empty windows and positive ones, counted on non-decreasing window ids
            tw = (sec - cfg.start_time) // Tw
            uw = np.unique(tw)
            st.time_windows += uw.size - (1 if st.time_last_window is not None and uw[0] == st.time_last_window else 0)
            st.time_last_window = int(uw[-1])
            if n_lab_b:
                pw = np.unique(tw[labelled])
                st.time_positive += pw.size - (1 if st.time_pos_last is not None and pw[0] == st.time_pos_last else 0)
                st.time_pos_last = int(pw[-1])

            keep = min(cfg.clean_lines + 4, n)
            st.tail_ids = ids[-keep:].copy()
            st.tail_lab = labelled[-keep:].copy()
            st.logical += n
            st.physical += n + len(ins)
            b_idx += 1
            if progress is not None:
                progress(st.logical, cfg.n_lines)
        # corrupt lines planned at the very end (none: positions are < n_lines) — nothing left over
    finally:
        if gz is not None:
            gz.close()
        raw.close()
        alarms_f.close()
        ep_f.close()
        if tid_f is not None:
            tid_f.close()

    n_total = st.physical
    elapsed = time.perf_counter() - t_start
    counts = {
        "lines_total": n_total,
        "lines_valid": st.logical,
        "lines_normal": st.logical - n_labelled,
        "lines_anomalous": n_labelled,
        "lines_corrupt": len(corrupt_done),
        "episodes": st.episode_id,
        "alarms": st.episode_id,
        "templates": len(gen.templates),
        "normal_templates": int(gen.normal_ids.size),
    }
    hard_cases = {
        "benign_context_anomaly_lines": n_benign["context_anomaly"],
        "benign_trigger_lines": n_benign["trigger"],
        "benign_cooccur_x_lines": n_benign["cooccur_x"],
        "benign_cooccur_y_lines": n_benign["cooccur_y"],
        "benign_close_lines": n_benign["close"],
        "bursts": dict(st.bursts),
        "cleanup_replaced_lines": st.counts.get("cleanup_replaced", 0),
    }
    windows = {
        "fixed_window_lines": W,
        "fixed_windows": st.fixed_windows,
        "fixed_windows_positive": st.fixed_positive,
        "fixed_positive_fraction": st.fixed_positive / max(st.fixed_windows, 1),
        "time_window_seconds": Tw,
        "time_windows_nonempty": st.time_windows,
        "time_windows_positive": st.time_positive,
        "time_positive_fraction": st.time_positive / max(st.time_windows, 1),
    }
    files = {"corpus": corpus_name, "alarms": "alarms.csv", "episodes": "episodes.csv", "truth": "truth.json"}
    if cfg.write_template_ids:
        files["template_ids"] = "template_ids.i32"
    truth = {
        "format": "bgl",
        "generator": "ray_logmilp.synthetic",
        "config": cfg.to_dict(),
        "files": files,
        "counts": counts,
        "episodes_by_kind": dict(st.episodes_by_kind),
        "labelled_lines_by_kind": dict(st.labelled_by_kind),
        "order_variants": dict(st.order_variants),
        "labelled_lines_by_tag": dict(sorted(st.tag_counts.items())),
        "hard_cases": hard_cases,
        "windows": windows,
        "corrupt_lines": corrupt_done,
        "time_range": [cfg.start_time, int(st.t_us // 1_000_000)],
        "templates": [t.to_dict() for t in gen.templates],
    }
    with open(out / "truth.json", "w") as f:
        json.dump(truth, f, indent=1)
    summary = {
        "out_dir": str(out),
        "files": files,
        **counts,
        "episodes_by_kind": dict(st.episodes_by_kind),
        "fixed_positive_fraction": round(windows["fixed_positive_fraction"], 4),
        "time_positive_fraction": round(windows["time_positive_fraction"], 4),
        "seconds": round(elapsed, 3),
        "bytes": (out / corpus_name).stat().st_size,
    }
    logger.info("synthetic corpus: %d lines (%d anomalous) in %.1fs -> %s", n_total, n_labelled, elapsed, out)
    return summary


# ------------------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    d = SyntheticConfig.__dataclass_fields__
    p = argparse.ArgumentParser(
        prog="python -m ray_logmilp.synthetic",
        description="Write a synthetic BGL-layout log corpus with labelled anomalous lines, alarms.csv, "
                    "episodes.csv and truth.json (see docs/synthetic.md).")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--lines", type=int, default=d["n_lines"].default, help="valid lines to write")
    p.add_argument("--seed", type=int, default=d["seed"].default)
    p.add_argument("--templates", type=int, default=d["n_templates"].default,
                   help="number of normal background templates")
    p.add_argument("--rate", type=float, default=d["lines_per_second"].default,
                   help="ordinary lines per second")
    p.add_argument("--episode-rate", type=float, default=d["episode_rate"].default,
                   help="anomaly episodes per 1,000 lines")
    p.add_argument("--burst-rate", type=float, default=d["burst_rate"].default,
                   help="distractor bursts per 1,000 lines")
    p.add_argument("--start-time", type=int, default=d["start_time"].default, help="epoch seconds")
    p.add_argument("--zipf", type=float, default=d["zipf_exponent"].default, help="Zipf exponent")
    p.add_argument("--alarm-pad", type=float, default=d["alarm_pad_seconds"].default,
                   help="seconds added around each episode in alarms.csv")
    p.add_argument("--gzip", action="store_true", help="write corpus.log.gz")
    p.add_argument("--corrupt", action="store_true", help="plant bad lines (listed in truth.json)")
    p.add_argument("--template-ids", action="store_true", help="also write template_ids.i32")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any SyntheticConfig field, e.g. --set kind_weights=1,1,1,0 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _coerce(name: str, text: str):
    fields = SyntheticConfig.__dataclass_fields__
    if name not in fields:
        raise SystemExit(f"--set {name}=...: unknown SyntheticConfig field; known: {', '.join(fields)}")
    default = fields[name].default
    try:
        if isinstance(default, bool):
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes")
        if isinstance(default, tuple):
            kind = type(default[0])
            return tuple(kind(v) for v in text.split(","))
        return type(default)(text)
    except ValueError:
        raise SystemExit(f"--set {name}={text!r}: expected {type(default).__name__}"
                         + (" values separated by commas" if isinstance(default, tuple) else ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kw = dict(n_lines=args.lines, seed=args.seed, n_templates=args.templates, lines_per_second=args.rate,
              episode_rate=args.episode_rate, burst_rate=args.burst_rate, start_time=args.start_time,
              zipf_exponent=args.zipf, alarm_pad_seconds=args.alarm_pad, gzip=args.gzip,
              corrupt=args.corrupt, write_template_ids=args.template_ids)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE")
        kw[name.strip()] = _coerce(name.strip(), value.strip())
    try:
        config = SyntheticConfig(**kw)
    except ValueError as e:
        raise SystemExit(f"error: {e}")

    last = [0.0]
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 1.0 or done == total:
            last[0] = now
            el = now - t0
            eta = el / done * (total - done) if done else 0.0
            print(f"\r[synthetic] {done:,}/{total:,} lines ({100 * done / total:.0f}%) "
                  f"{el:.1f}s elapsed, ETA {eta:.1f}s", end="\n" if done == total else "", file=sys.stderr,
                  flush=True)

    show = not args.quiet and config.n_lines >= 200_000
    summary = generate(config, args.out, progress=progress if show else None)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover (python -m ray_logmilp.synthetic runs __main__.py)
    raise SystemExit(main())
