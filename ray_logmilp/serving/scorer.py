"""Scoring raw windows of log lines with a model bundle: detection + localization, no Ray.

``WindowScorer`` is what Ray Serve replicas (``serving.deployment``), the plain FastAPI baseline and any
offline caller use; its results are the response models of ``serving.schema``. It takes windows of *raw* lines (exactly as they appear in the log file) and runs
them through the same steps as training, all vectorised over every line of every window at once:

    raw lines ──formats.parse_chunk(bundle.format)──► events  +  quarantine (reason per bad line)
    content ──parsing.mask_array(format masking)──► masked text ──bundle.parser.match_many──► template ids
    template id ≥ 0 ──► bundle.embeddings[id]        (the vectors the model was trained on)
    template id = -1 ──► bundle.embedder.embed(masked text)   (LRU-cached; the parser is never changed)
    windows ──pad + mask──► x [B,W,d], mask [B,W] ──localize.localize──► score, top-k, counterfactual

Indices in results are 0-based positions of lines in the request's window. A window whose lines are
all quarantined gets ``error`` set (and no score) instead of failing the batch.

Thread safety: the bundle's parser is frozen (``match_many`` never mutates it), the model runs under
``torch.no_grad`` in eval mode, and the only mutable state here, the unseen-template cache, is behind
a lock, so one scorer may be shared by concurrent callers.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ray_logmilp.bundle import Bundle, load_bundle
from ray_logmilp.ingest.parse import parse_chunk
from ray_logmilp.ingest.parsing import ParserConfig, mask_array
from ray_logmilp.model.localize import localize
from ray_logmilp.model.logmilp import MAX_LEN
from ray_logmilp.serving.schema import Counterfactual, QuarantinedLine, TopLine, WindowResult

log = logging.getLogger(__name__)

__all__ = ["WindowScorer"]

REQUEST_FILE = "request"
"""The ``file`` name raw request lines are parsed under (shows up nowhere in results)."""


@dataclass
class _Prepared:
    """One window after parsing: the request indices of its scored lines and their template ids."""

    lines: Sequence[Any]
    kept: np.ndarray            # [n_scored] int64, request index of each scored line
    ids: np.ndarray             # [n_scored] int64, row in the (extended) embedding table
    template_ids: np.ndarray    # [n_scored] int32, bundle template id or -1
    texts: list[str]            # [n_scored] template text (masked text for unseen lines)
    quarantined: list[QuarantinedLine]


def _as_bytes(line: Any) -> bytes:
    if isinstance(line, bytes):
        return line
    if isinstance(line, str):
        try:
            return line.encode("utf-8")
        except UnicodeEncodeError:
            pass
        # Not valid Unicode text: either bytes smuggled in with errors="surrogateescape" (the serve app
        # decodes request bodies that way) or lone surrogates from a JSON "\ud800" escape. Both become
        # invalid UTF-8 here, so parse_chunk quarantines the line as undecodable_bytes.
        try:
            return line.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return line.encode("utf-8", "surrogatepass")
    raise TypeError(f"a line must be str or bytes, got {type(line).__name__}")


def _as_text(line: Any) -> str:
    if isinstance(line, bytes):
        return line.decode("utf-8", "replace")
    return line


class WindowScorer:
    """Turns windows of raw log lines into :class:`WindowResult` s with one bundle.

    Args:
        bundle: a loaded :class:`~ray_logmilp.bundle.Bundle` (see :meth:`from_path`).
        max_line_bytes: lines longer than this (bytes, newline excluded) are quarantined as
            ``line_too_long``; default: the bundle format's own limit.
        perturbation: how the counterfactual removes the top line: ``"zero"`` (the paper) or ``"mask"``.
        cache_size: how many embeddings of unseen masked texts to keep (LRU).
        max_windows_per_forward: windows per model call (bounds memory for huge batches).
    """

    def __init__(self, bundle: Bundle, *, max_line_bytes: int | None = None, perturbation: str = "zero",
                 cache_size: int = 4096, max_windows_per_forward: int = 64) -> None:
        if perturbation not in ("zero", "mask"):
            raise ValueError(f"perturbation must be 'zero' or 'mask', got {perturbation!r}")
        if max_windows_per_forward < 1:
            raise ValueError(f"max_windows_per_forward must be >= 1, got {max_windows_per_forward}")
        self.bundle = bundle
        self.model = bundle.model
        self.model.eval()
        self.device = next(self.model.parameters()).device
        fmt = bundle.format
        if max_line_bytes is not None and max_line_bytes != fmt.max_line_bytes:
            if max_line_bytes < 1:
                raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
            fmt = dataclasses.replace(fmt, max_line_bytes=int(max_line_bytes))
        self.format = fmt
        self.parser_config = ParserConfig.from_format(bundle.format)
        self.perturbation = perturbation
        self.max_windows_per_forward = int(max_windows_per_forward)
        self.max_window_lines = MAX_LEN
        self.embeddings = torch.from_numpy(np.ascontiguousarray(bundle.embeddings)).to(self.device)  # [T,d]
        self.num_templates = int(self.embeddings.shape[0])
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = int(cache_size)
        self._lock = threading.Lock()
        self._delims = tuple(self.parser_config.extra_delimiters)
        self._match_cache: dict[str, int] = {}
        self._match_cache_size = 65536

    @classmethod
    def from_path(cls, bundle_dir: str, *, device: str | torch.device = "cpu", **kwargs: Any) -> "WindowScorer":
        """Load a bundle (local folder or URI) and build a scorer on ``device``."""
        return cls(load_bundle(bundle_dir, device=device), **kwargs)

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    # -- parsing -----------------------------------------------------------------------------------
    def _tokens_text(self, masked: str) -> str:
        """Masked text in drain's token form (extra delimiters → space, whitespace runs → one space),
        the same shape as a template text."""
        for d in self._delims:
            masked = masked.replace(d, " ")
        return " ".join(masked.split())

    def _embed_unseen(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), d] embeddings of unseen masked texts, through the LRU cache."""
        out: list[np.ndarray | None] = [None] * len(texts)
        missing: list[int] = []
        with self._lock:
            for i, t in enumerate(texts):
                vec = self._cache.get(t)
                if vec is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(t)
                    out[i] = vec
        if missing:
            vecs = np.asarray(self.bundle.embedder.embed([texts[i] for i in missing]), dtype=np.float32)
            with self._lock:
                for i, vec in zip(missing, vecs):
                    out[i] = vec
                    if self._cache_size > 0:
                        self._cache[texts[i]] = vec
                        self._cache.move_to_end(texts[i])
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if not out:
            return np.zeros((0, int(self.embeddings.shape[1])), np.float32)
        return np.stack(out).astype(np.float32, copy=False)

    @staticmethod
    def _lines_array(windows: Sequence[Sequence[Any]]) -> "pa.Array | list[bytes]":
        """All lines of all windows, in order: one Arrow string array when every line is valid text
        (the common case, no per-line work), else a list of bytes (see :func:`_as_bytes`)."""
        flat = [line for w in windows for line in w]
        if all(type(line) is str for line in flat):
            try:
                return pa.array(flat, pa.large_string())
            except (UnicodeEncodeError, pa.ArrowException):
                pass  # lone or escaped surrogates: go through bytes, parse_chunk quarantines them
        return [_as_bytes(line) for line in flat]

    def _match(self, masked: pa.Array) -> np.ndarray:
        """Template id (int32, -1 = unseen) per masked message. The frozen parser's answer for a
        message never changes, so answers are cached (logs repeat) and drain runs only on new ones."""
        if len(masked) == 0:
            return np.zeros(0, np.int32)
        encoded = pc.dictionary_encode(masked)
        distinct = encoded.dictionary.to_pylist()
        ids = np.empty(len(distinct), dtype=np.int32)
        missing: list[int] = []
        cache = self._match_cache
        for i, m in enumerate(distinct):
            tid = cache.get(m)
            if tid is None:
                missing.append(i)
            else:
                ids[i] = tid
        if missing:
            found = self.bundle.parser.match_many([distinct[i] for i in missing])
            ids[missing] = found
            with self._lock:
                if len(cache) + len(missing) > self._match_cache_size:
                    cache.clear()  # crude but O(1) amortised; refills from the traffic at hand
                cache.update(zip((distinct[i] for i in missing), found.tolist()))
        return ids[encoded.indices.to_numpy(zero_copy_only=False)]

    def _prepare(self, windows: Sequence[Sequence[Any]]) -> tuple[list[_Prepared], torch.Tensor]:
        """Parse every line of every window in one go; returns per-window parses and the embedding
        table extended with this call's unseen texts."""
        sizes = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
        offsets = np.zeros(len(windows) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        # parse_chunk quarantines what ingest would (a NUL byte included, as nul_byte), so both agree.
        events, quarantine = parse_chunk(self.format, self._lines_array(windows), file=REQUEST_FILE, first_line_no=0)

        # Template ids of the parsed lines (global line number = index into flat).
        line_no = events.column("line_no").to_numpy()
        content = events.column("content").combine_chunks()
        masked = mask_array(self.parser_config, content) if len(content) else pa.array([], pa.string())
        tids = self._match(masked)
        rows = tids.astype(np.int64)
        texts: list[str] = [""] * len(tids)
        unseen_pos = np.flatnonzero(tids < 0)
        known_pos = np.flatnonzero(tids >= 0)
        template_texts = self.bundle.template_texts
        for i in known_pos:
            texts[i] = template_texts[tids[i]]
        extended = self.embeddings
        if len(unseen_pos):
            masked_py = masked.take(pa.array(unseen_pos)).to_pylist()
            norm = [self._tokens_text(m) for m in masked_py]
            distinct = list(dict.fromkeys(norm))
            slot = {t: self.num_templates + j for j, t in enumerate(distinct)}
            for i, t in zip(unseen_pos, norm):
                texts[i] = t
                rows[i] = slot[t]
            vecs = torch.from_numpy(self._embed_unseen(distinct)).to(self.device)
            extended = torch.cat([self.embeddings, vecs], dim=0)

        # Split back into windows (line numbers are sorted: parse_chunk keeps line order).
        q_line = quarantine.column("line_no").to_numpy()
        q_reason = quarantine.column("reason").to_pylist()
        q_raw = quarantine.column("raw").to_pylist()
        ev_cut = np.searchsorted(line_no, offsets)
        q_cut = np.searchsorted(q_line, offsets)
        prepared = []
        for w in range(len(windows)):
            a, b = ev_cut[w], ev_cut[w + 1]
            qa, qb = q_cut[w], q_cut[w + 1]
            prepared.append(_Prepared(
                lines=windows[w],
                kept=line_no[a:b] - offsets[w],
                ids=rows[a:b],
                template_ids=tids[a:b],
                texts=texts[a:b],
                quarantined=[QuarantinedLine(index=int(q_line[j] - offsets[w]), reason=q_reason[j], raw=q_raw[j])
                             for j in range(qa, qb)],
            ))
        return prepared, extended

    # -- scoring -----------------------------------------------------------------------------------
    def score_windows(self, windows: Sequence[Sequence[Any]],
                      top_k: int | Sequence[int] = 5) -> list[WindowResult]:
        """Detection + localization for each window of raw lines (str or bytes, newline removed).

        ``top_k`` is one value for all windows or one per window. Windows must be non-empty and at most
        ``max_window_lines`` long (the caller validates requests; this raises ValueError).
        """
        n = len(windows)
        ks = [int(top_k)] * n if isinstance(top_k, (int, np.integer)) else [int(k) for k in top_k]
        if len(ks) != n:
            raise ValueError(f"top_k has {len(ks)} values for {n} windows")
        if any(k < 1 for k in ks):
            raise ValueError("top_k must be >= 1")
        for i, w in enumerate(windows):
            if len(w) == 0:
                raise ValueError(f"window {i} is empty")
            if self.max_window_lines is not None and len(w) > self.max_window_lines:
                raise ValueError(f"window {i} has {len(w)} lines, above the model's max_len "
                                 f"{self.max_window_lines}")
        if n == 0:
            return []
        prepared, table = self._prepare(windows)
        thr = self.threshold
        results: list[WindowResult | None] = [None] * n
        scorable = []
        for i, p in enumerate(prepared):
            if len(p.kept) == 0:
                results[i] = WindowResult(
                    score=None, anomalous=None, threshold=thr, n_lines=len(p.lines), n_scored=0,
                    unseen_templates=0, quarantined=p.quarantined,
                    error=f"no line of this window could be scored: all {len(p.lines)} line(s) were "
                          f"quarantined (see 'quarantined')")
            else:
                scorable.append(i)
        # Similar lengths together keeps padding small.
        scorable.sort(key=lambda i: len(prepared[i].kept))
        step = self.max_windows_per_forward
        for start in range(0, len(scorable), step):
            chunk = scorable[start:start + step]
            for i, res in zip(chunk, self._score_prepared([prepared[i] for i in chunk], table,
                                                         [ks[i] for i in chunk])):
                results[i] = res
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_prepared(self, prepared: list[_Prepared], table: torch.Tensor, ks: list[int]) -> list[WindowResult]:
        B = len(prepared)
        W = max(len(p.kept) for p in prepared)
        ids = np.zeros((B, W), dtype=np.int64)
        mask = np.zeros((B, W), dtype=bool)
        for b, p in enumerate(prepared):
            ids[b, :len(p.ids)] = p.ids
            mask[b, :len(p.ids)] = True
        ids_t = torch.from_numpy(ids).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        x = table[ids_t] * mask_t.unsqueeze(-1)                                           # [B,W,d]
        locs = localize(self.model, x, mask_t, top_k=max(ks), perturbation=self.perturbation)
        thr = self.threshold
        out = []
        for p, loc, k in zip(prepared, locs, ks):
            top = []
            for j, wgt in zip(loc.indices[:k], loc.weights[:k]):
                idx = int(p.kept[j])
                top.append(TopLine(index=idx, line=_as_text(p.lines[idx]), template_id=int(p.template_ids[j]),
                                   template=p.texts[j], weight=float(wgt)))
            score = float(loc.p_orig)
            if not math.isfinite(score):
                raise FloatingPointError(f"the model produced a non-finite score ({score})")
            out.append(WindowResult(
                score=score, anomalous=bool(score >= thr), threshold=thr, n_lines=len(p.lines),
                n_scored=len(p.kept), unseen_templates=int((p.template_ids < 0).sum()), top=top,
                counterfactual=Counterfactual(removed_index=int(p.kept[loc.indices[0]]),
                                              score_without_top=float(loc.p_pert), drop=float(loc.drop)),
                quarantined=p.quarantined))
        return out

    # -- health and metadata -----------------------------------------------------------------------
    @torch.inference_mode()
    def check(self) -> float:
        """Score a one-line probe through the model; raises if the model cannot produce a finite score."""
        x = self.embeddings[:1].reshape(1, 1, -1) if self.num_templates else \
            torch.zeros(1, 1, self.model.input_dim, device=self.device)
        p = float(self.model(x, torch.ones(1, 1, dtype=torch.bool, device=self.device)).prob[0])
        if not math.isfinite(p):
            raise RuntimeError(f"model health probe produced a non-finite score ({p})")
        return p

    def info(self) -> dict[str, Any]:
        """Bundle version, threshold, template count and a config summary (for ``GET /v1/model``)."""
        b = self.bundle
        spec: dict[str, Any] = {}
        try:
            spec = b.embedder.spec()
        except Exception:  # pragma: no cover - embedder without a spec
            pass
        return {
            "version": b.version,
            "bundle_version": b.manifest.get("bundle_version"),
            "created": b.manifest.get("created"),
            "threshold": self.threshold,
            "templates": self.num_templates,
            "format": self.format.name,
            "max_line_bytes": self.format.max_line_bytes,
            "model": dict(b.manifest.get("model_config", {})),
            "window": dict(b.manifest.get("window", {})),
            "embedder": {"kind": spec.get("kind"), "dim": int(self.embeddings.shape[1])},
            "perturbation": self.perturbation,
            "device": str(self.device),
            "validation": {k: v for k, v in (b.metrics.get("validation") or {}).items()
                           if k in ("epoch", "threshold", "val_auc", "val_f1", "val_precision", "val_recall",
                                    "val_sr")},
        }
