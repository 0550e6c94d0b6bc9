"""Log templates: fixed words with parameter slots, built so that a Drain parser keeps them apart."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ray_logmilp.synthetic.config import SyntheticConfig
from ray_logmilp.synthetic.vocabulary import (ADJS, ADVS, ALERT_LEVELS, CLOSE_VERBS, COMPONENTS, DAEMONS,
                                              FAIL_WORDS, KEYS, NORMAL_LEVELS, NOUNS, OPEN_VERBS, PREPS,
                                              SLOT_KINDS, TAGS, VERBS, WARN_ADJS, WARN_VERBS)


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
        return self._pick(SLOT_KINDS)

    def _clauses(self, n: int, max_slots: int) -> list[tuple[str, str | None]]:
        """Trailing clauses as (token, slot kind or None) pairs; tokens with a slot hold '{}'."""
        out: list[tuple[str, str | None]] = []
        slots = 0
        for _ in range(n):
            r = self.rng.random()
            want_slot = slots < max_slots
            if r < 0.25 and want_slot:
                out += [(self._pick(PREPS), None), (self._pick(NOUNS), None), ("{}", self._slot())]
                slots += 1
            elif r < 0.40 and want_slot:
                out += [(self._pick(PREPS), None), ("{}", self._slot())]
                slots += 1
            elif r < 0.55 and want_slot:
                out += [(self._pick(KEYS) + "={}", self._pick(("num1", "num2", "num3", "num4", "num6", "hex")))]
                slots += 1
            elif r < 0.70:
                out += [(self._pick(ADVS), None)]
            else:
                out += [(self._pick(PREPS), None), (self._pick(ADJS), None), (self._pick(NOUNS), None)]
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
            component=self._pick(COMPONENTS),
            level=self._choice(ALERT_LEVELS if role in ("rare", "context_anomaly") else NORMAL_LEVELS),
            tag=self._pick(TAGS) if alert else "")
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
            toks.append((self._pick(DAEMONS), None))
        if self.rng.random() < 0.5:
            toks.append((self._pick(ADJS), None))
        toks.append((self._pick(NOUNS), None))
        if self.rng.random() < 0.4:
            toks.append((self._pick(NOUNS), None))
        toks.append((self._pick(VERBS), None))
        toks += self._clauses(int(self.rng.integers(0, 5)), max_slots=3)
        return toks

    def paired(self, head: list[tuple[str, str | None]], verbs: Sequence[str], n_clauses: int
               ) -> list[tuple[str, str | None]]:
        return head + [(self._pick(verbs), None)] + self._clauses(n_clauses, max_slots=2)

    def warn(self) -> list[tuple[str, str | None]]:
        return self._four_words(WARN_ADJS, NOUNS, NOUNS, WARN_VERBS, min_clauses=1)

    def fail(self) -> list[tuple[str, str | None]]:
        return self._four_words(NOUNS, FAIL_WORDS, WARN_ADJS, NOUNS, min_clauses=0)

    def _four_words(self, first, second, maybe, last, *, min_clauses: int) -> list[tuple[str, str | None]]:
        """first second [maybe] last + 0-3 clauses; the draws come in this order, so corpora stay byte-identical."""
        toks = [(self._pick(first), None), (self._pick(second), None)]
        if self.rng.random() < 0.5:
            toks.append((self._pick(maybe), None))
        toks.append((self._pick(last), None))
        return toks + self._clauses(int(self.rng.integers(min_clauses, 4)), max_slots=2)


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
            head.append((f._pick(DAEMONS), None))
        head += [(f._pick(NOUNS), None), (f._pick(NOUNS), None)]
        n_open = int(rng.integers(0, 3))
        f.build(lambda: f.paired(head, OPEN_VERBS, n_open), "open", g, alert=False)
        # A different token count from its open: Drain splits by length first, so the two never merge.
        opener = f.made[-1]
        for _ in range(10_000):
            toks = f.paired(head, CLOSE_VERBS, int(rng.integers(0, 4)))
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

