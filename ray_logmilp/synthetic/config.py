"""``SyntheticConfig``: everything that shapes a synthetic corpus, checked by the project's config engine."""
from __future__ import annotations

from dataclasses import dataclass

from ray_logmilp.config import require, to_dict

#: Episode kinds, in the order used for ``kind_weights``.
ANOMALY_KINDS: tuple[str, ...] = ("rare", "contextual", "cooccur", "order")
#: Kinds of bad lines planted in corrupt mode (names follow the quarantine reasons of formats.py).
CORRUPT_KINDS: tuple[str, ...] = ("undecodable_bytes", "header_mismatch", "empty_line", "bad_timestamp")


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
        # Direct construction may pass ints; the engine already converts, this keeps truth.json the same.
        self.kind_weights = tuple(float(w) for w in self.kind_weights)  # type: ignore[assignment]
        self.labelled_per_episode_weights = tuple(  # type: ignore[assignment]
            float(w) for w in self.labelled_per_episode_weights)
        self.burst_length = tuple(int(v) for v in self.burst_length)  # type: ignore[assignment]
        require(self.n_lines >= 1, "n_lines", f"must be >= 1, got {self.n_lines}")
        require(self.n_templates >= self.burst_top_k >= 1, "n_templates",
                f"must be >= burst_top_k ({self.burst_top_k}) >= 1, got {self.n_templates}")
        for name in ("zipf_exponent", "lines_per_second"):
            require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        require(self.start_time >= 0, "start_time", f"must be >= 0 (epoch seconds), got {self.start_time}")
        require(0 <= self.episode_rate <= 20, "episode_rate",
                f"must be in [0, 20] episodes per 1,000 lines, got {self.episode_rate}")
        require(len(self.kind_weights) == len(ANOMALY_KINDS) and min(self.kind_weights) >= 0
                and sum(self.kind_weights) > 0, "kind_weights",
                f"needs {len(ANOMALY_KINDS)} non-negative weights for {ANOMALY_KINDS}, not all zero, "
                f"got {list(self.kind_weights)}")
        require(len(self.labelled_per_episode_weights) == 3 and min(self.labelled_per_episode_weights) >= 0
                and sum(self.labelled_per_episode_weights) > 0, "labelled_per_episode_weights",
                f"needs 3 non-negative weights (1, 2, 3 labelled lines), not all zero, "
                f"got {list(self.labelled_per_episode_weights)}")
        for name in ("n_rare_templates", "n_context_pairs", "n_cooccur_pairs", "n_order_pairs"):
            require(1 <= getattr(self, name) <= 64, name, f"must be in [1, 64], got {getattr(self, name)}")
        for name in ("context_benign_rate", "cooccur_benign_rate", "order_pair_rate", "burst_rate"):
            require(0 <= getattr(self, name) <= 100, name,
                    f"must be in [0, 100] per 1,000 lines, got {getattr(self, name)}")
        require(1 <= self.order_max_gap <= 5, "order_max_gap", f"must be in [1, 5], got {self.order_max_gap}")
        require(0 <= self.order_reversed_fraction <= 1, "order_reversed_fraction",
                f"must be in [0, 1], got {self.order_reversed_fraction}")
        require(9 <= self.context_lines <= 30, "context_lines", f"must be in [9, 30], got {self.context_lines}")
        require(self.context_lines < self.clean_lines <= 40, "clean_lines",
                f"must be in (context_lines, 40] = ({self.context_lines}, 40], got {self.clean_lines}")
        require(len(self.burst_length) == 2 and 2 <= self.burst_length[0] <= self.burst_length[1] <= 200,
                "burst_length", f"must be [lo, hi] with 2 <= lo <= hi <= 200, got {list(self.burst_length)}")
        require(self.burst_speedup >= 1, "burst_speedup", f"must be >= 1, got {self.burst_speedup}")
        for name in ("n_nodes", "report_window_lines", "report_window_seconds"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("alarm_pad_seconds", "corrupt_per_kind"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        require(1024 <= self.block_lines <= 4_000_000, "block_lines",
                f"must be in [1024, 4000000], got {self.block_lines}")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists), in field order."""
        return to_dict(self)
