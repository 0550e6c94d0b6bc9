"""One block of a corpus: background traffic, benign look-alikes, bursts and planted anomaly episodes.

:class:`BlockGenerator` draws template ids, labels and nodes for a block of lines; :class:`CorpusState`
carries what crosses block boundaries (time, line counters, the previous block's tail) and the tallies
that ``truth.json`` reports.
"""
from __future__ import annotations

import numpy as np

from ray_logmilp.synthetic.config import ANOMALY_KINDS, SyntheticConfig
from ray_logmilp.synthetic.templates import build_templates
from ray_logmilp.synthetic.vocabulary import ParameterPools

_NEG = -(1 << 40)  # "no occurrence" sentinel for last-seen position arrays


def _last_before(mask: np.ndarray) -> np.ndarray:
    """For each position p, the largest q < p with mask[q], else _NEG."""
    n = mask.shape[0]
    idx = np.where(mask, np.arange(n, dtype=np.int64), _NEG)
    last = np.maximum.accumulate(idx)
    out = np.empty(n, dtype=np.int64)
    out[0] = _NEG
    out[1:] = last[:-1]
    return out


class CorpusState:
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


class BlockGenerator:
    """The template inventory and parameter pools of a config, and the draws that fill one block."""

    def __init__(self, config: SyntheticConfig):
        self.cfg = config
        self.templates = build_templates(config)
        self.pools = ParameterPools(config)
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
    def background(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` normal template ids drawn from the Zipf frequencies."""
        u = rng.random(n)
        return self.normal_ids[np.searchsorted(self.normal_cdf, u, side="right").clip(0, len(self.normal_ids) - 1)]

    def _positions(self, rng: np.random.Generator, n: int, rate_per_1k: float, hi: int) -> np.ndarray:
        """Random positions in [0, hi) with expected density rate_per_1k per 1,000 lines."""
        if rate_per_1k <= 0 or hi <= 0:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(rng.random(hi) < rate_per_1k / 1000.0)

    def block(self, rng: np.random.Generator, n: int, st: CorpusState):
        """Template ids, labels, burst flags, node indices and episode records for one block."""
        cfg = self.cfg
        C = cfg.clean_lines
        hi = n - self.margin  # structures start before this so they end inside the block
        ids = self.background(rng, n)
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
            ids[rem] = self.background(rng, rem.size)
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
        elif kind in ("contextual", "cooccur"):
            # a context line (trigger / X), then the labelled lines (anomaly / Y) of the same pair
            context, anomalous = ((self.trig_ids, self.ctx_ids) if kind == "contextual"
                                  else (self.x_ids, self.y_ids))
            gi = int(rng.integers(len(context)))
            ids[s] = context[gi]
            ctx_pos.append(s)
            p = s
            for i in range(nl):
                p += step()
                ids[p] = anomalous[gi]
                lab_pos.append(p)
            scrub = [int(context[gi]), int(anomalous[gi])]
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
                ids[bad] = self.background(rng, bad.size)
        node[s:end + 1] = node[s]
        return {"kind": kind, "variant": variant, "start": s, "end": end, "labelled": lab_pos,
                "context": ctx_pos}

    # -- text
    def contents(self, rng: np.random.Generator, ids: np.ndarray) -> list[str]:
        """The content text of each line: its template with drawn parameter values."""
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

