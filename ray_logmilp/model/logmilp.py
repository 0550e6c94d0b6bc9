"""LogMILP: prototype-guided multi-head attention MIL for log anomaly detection.

One file you can read top to bottom (paper section III, `papers/001_2225c42dd5408458.txt`):

    x [B,W,d] ──Linear──► H [B,W,d_h] ──(+ sinusoidal positions, + history summary)──► 2-layer Transformer ──► Z [B,W,d_h]
    Z, prototypes P [N,d_h] ──► s [B,W,N] = 1/(1+||ẑ_i − p̂_j||),  m_i = max_j s_ij,  b_i = 1 − m_i
    K-head attention pooling (logits + b_i, masked softmax) ──► Z_cat [B, K·d_h]
    F_p = (M_bag, E_bag, V_bag) [B,3]
    classifier([Z_cat ; F_p]) ──► logits [B,2], prob = softmax(logits)[:, 1]

A bag is a window of log lines; bags of different lengths are right-padded to a common W and come with a
boolean ``mask`` [B,W] where True marks a real instance. Padding never changes an output: padded rows are
zeroed on the way in, hidden from the encoder's self-attention, and excluded from every pooling step.

Imports torch only (no numpy, no Ray), so the module serves training, evaluation and inference alike.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_logmilp.model.config import PERTURBATION_MODES, ModelConfig

__all__ = [
    "ModelConfig",
    "LogMILPOutput",
    "LogMILP",
    "attention_entropy",
    "key_head_attention",
    "perturb_key_instance",
]



class LogMILPOutput(NamedTuple):
    """What :meth:`LogMILP.forward` returns. A NamedTuple so DDP, tracing and unpacking all just work."""

    logits: torch.Tensor     # [B,2]   class logits (0 = normal, 1 = anomalous)
    prob: torch.Tensor       # [B]     softmax(logits)[:, 1], the bag anomaly score P
    attention: torch.Tensor  # [B,K,W] pooling weights; sum to 1 over real instances, exactly 0 on padding
    #                          ([B,1,W]: the localizer's weights, with ModelConfig.localizer_head)
    m: torch.Tensor          # [B,W]   max prototype similarity per instance (0 on padding / without prototypes)
    M_bag: torch.Tensor      # [B]     max_i m_i over real instances
    E_bag: torch.Tensor      # [B]     entropy of the mean soft prototype assignment / log N
    V_bag: torch.Tensor      # [B]     mean_i m_i over real instances
    s: torch.Tensor          # [B,W,N] similarity to each prototype (N = 0 without prototypes)
    scores: torch.Tensor     # [B,K(+1),W] line scores: each head's attention logit before the softmax, −inf on
    #                          padding. The softmax ignores a common shift; LossConfig.lambda_i pins it.


def sinusoidal_positions(max_len: int, dim: int) -> torch.Tensor:
    """Fixed sin/cos position table [max_len, dim] (Vaswani et al.), rows scaled to unit L2 norm.

    The unscaled rows have norm sqrt(dim/2) (8 for dim=128), which would drown a freshly initialised
    projection of a unit-norm embedding (norm ≈ 0.6); unit rows keep content and position comparable and
    the projection can still learn to weight content up.
    """
    position = torch.arange(max_len, dtype=torch.float32)[:, None]                   # [L,1]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # [dim/2]
    pe = torch.zeros(max_len, dim)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)
    return pe * math.sqrt(2.0 / dim)                                                  # [L,dim]


class _DenseEncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer without the inference fast path.

    PyTorch swaps in a fused kernel under ``eval()`` + ``no_grad``; with a float attention mask (our
    relative-position bias) that kernel returns NaN on CPU (torch 2.13), and it is a second numeric
    path besides. This is the layer's own slow path, unchanged, for training and inference alike.
    Parameter names are the parent's, so checkpoints are interchangeable with a stock layer.
    """

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = src                                                                        # [B,W,d_h]
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x


class LogMILP(nn.Module):
    """Prototype-guided multi-head attention MIL (paper section III-C/D)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.input_dim < 1:
            raise ValueError("ModelConfig.input_dim is 0 (unset); set it to the embedding dimension")
        self.config = cfg = config
        d_h, K = cfg.hidden_dim, cfg.attention_heads

        # III-C instance encoding: H = XW + b, then a Transformer encoder Ψ.
        self.proj = nn.Linear(cfg.input_dim, d_h)
        if cfg.positional_encoding:
            # Not persistent: a deterministic function of the config, so it stays out of checkpoints.
            self.register_buffer("pos", sinusoidal_positions(cfg.max_len, d_h), persistent=False)
        # The encoder's only consumers are the prototypes, the pooled values and encoder-scored attention;
        # without any of them it is not built (DDP rejects parameters that never get a gradient).
        self.uses_encoder = cfg.use_prototypes or "encoder" in (cfg.pooled_values, cfg.attention_input)
        if cfg.relative_window and self.uses_encoder:
            # b[h, R + (j − i)]: added to head h's attention logit of query i on key j, in every layer.
            self.relative_bias = nn.Parameter(torch.zeros(cfg.encoder_heads, 2 * cfg.relative_window + 1))
        if cfg.history_window:
            self.history_key = nn.Linear(d_h, d_h)                                    # U
            self.history_offset = nn.Parameter(torch.zeros(d_h, cfg.history_window))  # o_k, oldest first
            self.history_out = nn.Linear(d_h, d_h)                                    # V
        if self.uses_encoder:
            layer = _DenseEncoderLayer(d_model=d_h, nhead=cfg.encoder_heads, dim_feedforward=cfg.ff_dim,
                                       dropout=cfg.dropout, batch_first=True, norm_first=cfg.norm_first)
            # No nested-tensor conversion: padded rows are masked and zeroed anyway, and one dense code
            # path keeps training and inference numerically alike.
            self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.encoder_layers, enable_nested_tensor=False,
                                                 norm=nn.LayerNorm(d_h) if cfg.norm_first else None)

        # III-D prototypes. Only created when used, so DDP never sees parameters without gradients.
        if cfg.use_prototypes:
            self.prototypes = nn.Parameter(torch.randn(cfg.num_prototypes, d_h))      # P [N,d_h]

        # K-head attention pooling: head k scores instance i as w_k · tanh(V_k z_i) + c_k. The localizer,
        # when present, is one more head of the same form, the last one.
        n_heads = K + int(cfg.localizer_head)
        self.attn_hidden = nn.Linear(d_h, n_heads * cfg.attention_dim)                # all V_k at once
        self.attn_out_weight = nn.Parameter(torch.empty(n_heads, cfg.attention_dim))  # w_k
        self.attn_out_bias = nn.Parameter(torch.zeros(n_heads))                       # c_k
        nn.init.xavier_uniform_(self.attn_out_weight)

        n_extras = int(cfg.witness_scores) + int(cfg.evidence_counts)                 # per-head scalars for the classifier
        if cfg.bag_classifier == "concat":
            # Classifier on [Z_cat ; F_p (; witness scores) (; evidence counts)] → 2 logits.
            self.classifier = nn.Sequential(
                nn.Linear(K * d_h + 3 + K * n_extras, d_h),
                nn.GELU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(d_h, 2),
            )
        else:
            # One MLP per head on [z_k ; F_p (; witness_k) (; n_k)], all K at once, each d_h / K wide.
            d_in, d_c = d_h + 3 + n_extras, max(1, d_h // K)
            self.head_hidden_weight = nn.Parameter(torch.empty(K, d_in, d_c))
            self.head_hidden_bias = nn.Parameter(torch.zeros(K, d_c))
            self.head_out_weight = nn.Parameter(torch.empty(K, d_c))
            self.head_out_bias = nn.Parameter(torch.zeros(K))
            for k in range(K):   # nn.Linear's default init, per head
                nn.init.kaiming_uniform_(self.head_hidden_weight[k].T, a=math.sqrt(5))
                nn.init.kaiming_uniform_(self.head_out_weight[k:k + 1], a=math.sqrt(5))
            self.head_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> LogMILPOutput:
        """Score a batch of bags.

        x: [B,W,d] float instance embeddings; mask: [B,W] bool, True = real instance, False = padding.
        Every bag needs at least one real instance.
        """
        cfg = self.config
        self._check_inputs(x, mask)
        B, W, _ = x.shape
        real = mask[..., None]                                                         # [B,W,1]
        n_real = mask.sum(dim=1).to(x.dtype)                                           # [B]

        # --- instance encoding -------------------------------------------------------------------
        # Zero padded rows first: whatever junk (even NaN) sits there can then never reach a real row.
        x = x.masked_fill(~real, 0.0)
        h = self.proj(x)                                                               # [B,W,d_h]
        if cfg.positional_encoding:
            # Absolute positions within the window: a right-padded bag keeps its real rows' positions.
            h = h + cfg.positional_scale * self.pos[:W]
        h_line = h                                                                     # [B,W,d_h] the line alone
        if cfg.history_window:
            h = h + self.history_out(self._history(h, mask))                          # [B,W,d_h]
        if not self.uses_encoder:
            z = h                                                                      # [B,W,d_h] unused
        elif cfg.relative_window:
            z = self.encoder(h, mask=self._relative_attention_mask(mask))             # [B,W,d_h]
        else:
            z = self.encoder(h, src_key_padding_mask=~mask)                            # [B,W,d_h]
        z = z.masked_fill(~real, 0.0)

        # --- prototype similarity ----------------------------------------------------------------
        if cfg.use_prototypes:
            z_hat = F.normalize(z, dim=-1)                                             # [B,W,d_h]
            p_hat = F.normalize(self.prototypes, dim=-1)                               # [N,d_h]
            cos = z_hat @ p_hat.T                                                      # [B,W,N]
            # ||a − b||² = 2 − 2cos for unit vectors: avoids a [B,W,N,d_h] difference tensor. The clamp keeps
            # sqrt's gradient finite when an instance sits exactly on a prototype.
            dist = torch.sqrt((2.0 - 2.0 * cos).clamp_min(1e-8))                       # [B,W,N]
            s = 1.0 / (1.0 + dist)                                                     # [B,W,N] in [1/3, 1]
            m = s.max(dim=-1).values.masked_fill(~mask, 0.0)                           # [B,W]
            M_bag = m.masked_fill(~mask, float("-inf")).max(dim=1).values              # [B]
            V_bag = m.sum(dim=1) / n_real                                              # [B]
            # Soft assignment of each real instance to the prototypes, averaged over the bag.
            q = torch.softmax(s / cfg.assignment_temperature, dim=-1) * real          # [B,W,N]
            q_bar = q.sum(dim=1) / n_real[:, None]                                     # [B,N]
            ent = -(q_bar * torch.log(q_bar.clamp_min(1e-12))).sum(dim=-1)             # [B]
            E_bag = ent / math.log(cfg.num_prototypes) if cfg.num_prototypes > 1 else torch.zeros_like(ent)
        else:
            s = z.new_zeros(B, W, 0)
            m = z.new_zeros(B, W)
            M_bag = V_bag = E_bag = z.new_zeros(B)

        # --- K-head attention pooling ------------------------------------------------------------
        # "local": the line's own pre-encoder features h (finite on padding, which the softmax masks out).
        scored = {"encoder": z, "local": h, "line": h_line}[cfg.attention_input]      # [B,W,d_h]
        K = cfg.attention_heads                                                        # pooling heads
        hid = torch.tanh(self.attn_hidden(scored)).view(B, W, -1, cfg.attention_dim)  # [B,W,K(+1),d_a]
        att_logits = torch.einsum("bwkd,kd->bkw", hid, self.attn_out_weight)          # [B,K(+1),W]
        att_logits = att_logits + self.attn_out_bias[None, :, None]
        if cfg.use_prototypes and cfg.use_candidate_bias:
            # Anomaly-candidate bias: instances far from every prototype get more attention a priori.
            att_logits = att_logits + (1.0 - m)[:, None, :]                            # b_i broadcast over heads
        att_logits = att_logits.masked_fill(~mask[:, None, :], float("-inf"))
        attention = torch.softmax(att_logits, dim=-1)                                  # [B,K(+1),W], 0 on padding
        pooled = z if cfg.pooled_values == "encoder" else h                            # [B,W,d_h]
        z_heads = attention[:, :K] @ pooled                                            # [B,K,d_h]
        pool_logits = att_logits[:, :K]                                                # [B,K,W]

        # --- bag classifier ----------------------------------------------------------------------
        f_p = torch.stack([M_bag, E_bag, V_bag], dim=-1)                               # [B,3]
        extras = []                                                                    # each [B,K]
        if cfg.witness_scores:
            extras.append(pool_logits.max(dim=-1).values)                              # −inf padding never wins
        if cfg.evidence_counts:
            extras.append(torch.sigmoid(pool_logits).sum(dim=-1))                      # σ(−inf) = 0 on padding
        if cfg.bag_classifier == "concat":
            features = [z_heads.reshape(B, -1), f_p] + extras                          # Z_cat [B,K·d_h]
            logits = self.classifier(torch.cat(features, dim=-1))                      # [B,2]
        else:
            logits = self._any_head_logits(z_heads, f_p, extras)                       # [B,2]
        prob = torch.softmax(logits, dim=-1)[:, 1]                                     # [B]
        if cfg.localizer_head:
            attention = attention[:, K:]                                               # [B,1,W] the localizer
        return LogMILPOutput(logits, prob, attention, m, M_bag, E_bag, V_bag, s, att_logits)

    def _any_head_logits(self, z_heads: torch.Tensor, f_p: torch.Tensor,
                         extras: list[torch.Tensor]) -> torch.Tensor:
        """bag_classifier="heads": ℓ_k = MLP_k([z_k ; F_p (; witness_k) (; n_k)]), ℓ = logsumexp_k ℓ_k. Returns
        the logits [B,2] = [−ℓ/2, ℓ/2], so softmax(...)[:, 1] = sigmoid(ℓ) and the focal loss reads them as
        before. extras: per-head scalars, each [B,K]."""
        B, K, _ = z_heads.shape
        parts = [z_heads, f_p[:, None, :].expand(B, K, 3)] + [e[..., None] for e in extras]
        u = torch.cat(parts, dim=-1)                                                   # [B,K,d_in]
        hidden = torch.einsum("bki,kic->bkc", u, self.head_hidden_weight) + self.head_hidden_bias  # [B,K,d_c]
        hidden = self.head_dropout(F.gelu(hidden))
        head_logit = (hidden * self.head_out_weight).sum(dim=-1) + self.head_out_bias  # [B,K]
        bag_logit = torch.logsumexp(head_logit, dim=-1)                                # [B]
        return torch.stack([-0.5 * bag_logit, 0.5 * bag_logit], dim=-1)               # [B,2]

    def _history(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """c_i = max over the real lines i−R … i−1 of (U h_j + o_{i−j}); 0 where there is none. [B,W,d_h]."""
        R, W = self.config.history_window, h.shape[1]
        # A large finite fill, not −inf: max() then never sees an all −inf window, and no NaN can arise
        # in backward; windows without a real line are zeroed below anyway.
        u = self.history_key(h).masked_fill(~mask[..., None], -1e4)                  # [B,W,d_h]
        u = F.pad(u, (0, 0, R, 0), value=-1e4)                                         # [B,W+R,d_h]
        # R running maxima over shifted contiguous slices: the same values as a max over u.unfold(1, R, 1),
        # about 3.5x faster on CPU (a reduction over the strided last dim of an unfold view is slow).
        c = u[:, :W] + self.history_offset[:, 0]                                       # [B,W,d_h]: j=0 ↦ line i−R
        for j in range(1, R):
            c = torch.maximum(c, u[:, j:j + W] + self.history_offset[:, j])            # j ↦ line i−R+j
        seen = F.pad(mask.to(h.dtype), (R, 0)).unfold(1, R, 1)[:, :W].sum(dim=-1)      # [B,W] real lines in window
        return c.masked_fill(((seen == 0) | ~mask)[..., None], 0.0)

    def _relative_attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Float attention mask [B·heads, W, W]: the relative-position bias, −inf on padded keys.

        Padding goes into the same float mask (not src_key_padding_mask) because PyTorch's encoder
        wants both masks of one kind; every bag has a real instance, so no row is all −inf.
        """
        B, W = mask.shape
        R, H = self.config.relative_window, self.config.encoder_heads
        idx = torch.arange(W, device=mask.device)
        offset = (idx[None, :] - idx[:, None]).clamp(-R, R) + R                        # [W,W] key j − query i
        bias = self.relative_bias[:, offset]                                           # [H,W,W]
        bias = bias[None].expand(B, H, W, W)
        bias = bias.masked_fill(~mask[:, None, None, :], float("-inf"))                # [B,H,W,W]
        return bias.reshape(B * H, W, W)

    def _check_inputs(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        cfg = self.config
        if x.dim() != 3 or x.shape[-1] != cfg.input_dim:
            raise ValueError(f"x must be [B, W, {cfg.input_dim}] (ModelConfig.input_dim), got {tuple(x.shape)}")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = real instance), got dtype {mask.dtype}")
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be [B, W] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        if cfg.positional_encoding and x.shape[1] > cfg.max_len:
            raise ValueError(f"bag length W={x.shape[1]} exceeds ModelConfig.max_len={cfg.max_len}")
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            idx = empty.nonzero().flatten().tolist()
            raise ValueError(f"bags {idx[:10]} have no real instance (mask all False); drop empty bags upstream")


@torch.no_grad()
def key_head_attention(attention: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The key head k* = argmin_k attention entropy per bag, and its attention [B,W] with padding at −1
    (so padding never wins an argmax or a top-k). Ties break towards the lowest head index."""
    rows = torch.arange(attention.shape[0], device=attention.device)
    key_head = attention_entropy(attention, mask).argmin(dim=1)                        # [B]
    return key_head, attention[rows, key_head].masked_fill(~mask, -1.0)                # [B], [B,W]


@torch.no_grad()
def attention_entropy(attention: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Entropy of each head's attention over a bag's real instances, normalised by log(W_real).

    attention: [B,K,W]; mask: [B,W] bool. Returns [B,K] in [0, 1]; 0 for bags with a single instance,
    whose attention is necessarily one-hot.
    """
    a = attention.masked_fill(~mask[:, None, :], 0.0)                                  # [B,K,W]
    ent = -(a * torch.log(a.clamp_min(1e-12))).sum(dim=-1)                             # [B,K]
    n_real = mask.sum(dim=1).to(ent.dtype)                                             # [B]
    denom = torch.where(n_real >= 2, torch.log(n_real.clamp_min(2.0)), torch.ones_like(n_real))
    return ent / denom[:, None]


@torch.no_grad()
def perturb_key_instance(
    x: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor, mode: str = "zero"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Remove each bag's key instance (Algorithm 1 lines 9–12).

    Key head k* = argmin_k attention entropy (the most decisive head); key instance i* = argmax attention
    in head k*. ``mode="zero"`` sets x[b, i*] to zero (the paper: the instance stays in the bag with an
    empty embedding). ``mode="mask"`` drops it from the bag through the mask instead; a bag whose only
    real instance is i* cannot lose it (it would be empty), so such bags fall back to zeroing.

    Returns (x_pert [B,W,d], mask_pert [B,W], key_head [B], key_index [B]); inputs are not modified.
    Ties break towards the lowest head / instance index (torch.argmin/argmax return the first extremum).
    """
    if mode not in PERTURBATION_MODES:
        raise ValueError(f"perturbation mode must be one of {PERTURBATION_MODES}, got {mode!r}")
    B = x.shape[0]
    rows = torch.arange(B, device=x.device)
    key_head, key_att = key_head_attention(attention, mask)                            # [B], [B,W]
    key_index = key_att.argmax(dim=1)                                                  # [B]

    x_pert, mask_pert = x.clone(), mask.clone()
    if mode == "zero":
        x_pert[rows, key_index] = 0.0
    else:
        removable = mask.sum(dim=1) >= 2                                               # [B]
        mask_pert[rows, key_index] = ~removable          # stays True only where removal would empty the bag
        x_pert[rows[~removable], key_index[~removable]] = 0.0
    return x_pert, mask_pert, key_head, key_index
