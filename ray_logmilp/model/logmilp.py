"""LogMILP: prototype-guided multi-head attention MIL for log anomaly detection.

One file you can read top to bottom (paper section III, `papers/001_2225c42dd5408458.txt`), with our
changes marked "ours":

    x [B,W,d] ──Linear──► + 0.1·sinusoidal positions (ours) ──► + history summary (ours) ──► h [B,W,d_h]
    h ──2-layer pre-LN Transformer──► Z [B,W,d_h]
    Z, prototypes P [N,d_h] ──► s [B,W,N] = 1/(1+||ẑ_i − p̂_j||),  m_i = max_j s_ij,  b_i = 1 − m_i
    F_p = (M_bag, E_bag, V_bag) [B,3]
    K pooling heads score the local features h (ours; the paper scores Z), logits + b_i, masked softmax
        ──► A [B,K,W], and average h (ours; the paper averages Z) ──► Z_cat [B, K·d_h]
    classifier([Z_cat ; F_p]) ──► logits [B,2], prob = softmax(logits)[:, 1]

The encoder output Z feeds only the prototypes: heads that score and average each line's own features
(plus its history) point at the line that matters, which is what localization needs.

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

from ray_logmilp.model.config import ModelConfig

__all__ = ["MAX_LEN", "ModelConfig", "LogMILPOutput", "LogMILP"]

# Longest bag accepted: the size of the position table (bags are 64 lines by default).
MAX_LEN = 4096
# Multiplier on the unit-norm position code: at full strength it drowned the projected template embedding
# (norm ~0.5) and self-attention keyed on positions; 0.1 keeps order visible.
POSITIONAL_SCALE = 0.1
# τ of the soft prototype assignment softmax(s_ij / τ) behind E_bag: s_ij lies in [1/3, 1], so τ = 1 would
# make E_bag ≈ 1 always; 0.1 spreads the logits over ~6.7.
ASSIGNMENT_TEMPERATURE = 0.1


class LogMILPOutput(NamedTuple):
    """What :meth:`LogMILP.forward` returns. A NamedTuple so DDP, tracing and unpacking all just work."""

    logits: torch.Tensor     # [B,2]   class logits (0 = normal, 1 = anomalous)
    prob: torch.Tensor       # [B]     softmax(logits)[:, 1], the bag anomaly score P
    attention: torch.Tensor  # [B,K,W] pooling weights; sum to 1 over real instances, exactly 0 on padding
    m: torch.Tensor          # [B,W]   max prototype similarity per instance (0 on padding / without prototypes)
    M_bag: torch.Tensor      # [B]     max_i m_i over real instances
    E_bag: torch.Tensor      # [B]     entropy of the mean soft prototype assignment / log N
    V_bag: torch.Tensor      # [B]     mean_i m_i over real instances
    s: torch.Tensor          # [B,W,N] similarity to each prototype (N = 0 without prototypes)
    scores: torch.Tensor     # [B,K,W] line scores: each head's attention logit before the softmax, −inf on
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


def attention_dim(hidden_dim: int) -> int:
    """d_a, the hidden width of each pooling head's scoring MLP: half the latent size."""
    return hidden_dim // 2


class _DenseEncoderLayer(nn.TransformerEncoderLayer):
    """A pre-LN nn.TransformerEncoderLayer without the inference fast path.

    PyTorch swaps in a fused kernel under ``eval()`` + ``no_grad``; that is a second numeric path beside
    training's (and it returned NaN with float attention masks on CPU, torch 2.13). This is the layer's own
    slow path, unchanged, for training and inference alike. Parameter names are the parent's, so
    checkpoints are interchangeable with a stock layer.
    """

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = src                                                                        # [B,W,d_h]
        x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
        return x + self._ff_block(self.norm2(x))


class LogMILP(nn.Module):
    """Prototype-guided multi-head attention MIL (paper section III-C/D)."""

    def __init__(self, config: ModelConfig, input_dim: int):
        super().__init__()
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer (the embedding size), got {input_dim!r}")
        self.config = cfg = config
        self.input_dim = input_dim
        d_h, K, d_a = cfg.hidden_dim, cfg.attention_heads, attention_dim(cfg.hidden_dim)

        # III-C instance encoding: H = XW + b, plus positions and the history summary (ours).
        self.proj = nn.Linear(input_dim, d_h)
        # Positions: a Transformer without them could never learn anomalies defined by the order of normal
        # lines. Not persistent: a function of the config, so it stays out of checkpoints.
        self.register_buffer("pos", sinusoidal_positions(MAX_LEN, d_h), persistent=False)
        if cfg.history_window:
            self.history_key = nn.Linear(d_h, d_h)                                    # U
            self.history_offset = nn.Parameter(torch.zeros(d_h, cfg.history_window))  # o_k, oldest first
            self.history_out = nn.Linear(d_h, d_h)                                    # V
        # The encoder Ψ and the prototypes (III-D) feed only F_p: without prototypes neither is built (DDP
        # rejects parameters that never get a gradient). Pre-LN: post-LN mixed the one anomalous line into
        # its neighbours and the bag loss stalled at chance.
        if cfg.use_prototypes:
            layer = _DenseEncoderLayer(d_model=d_h, nhead=cfg.encoder_heads, dim_feedforward=cfg.ff_dim,
                                       dropout=cfg.dropout, batch_first=True, norm_first=True)
            # No nested-tensor conversion: padded rows are masked and zeroed anyway, and one dense code
            # path keeps training and inference numerically alike.
            self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.encoder_layers, enable_nested_tensor=False,
                                                 norm=nn.LayerNorm(d_h))
            self.prototypes = nn.Parameter(torch.randn(cfg.num_prototypes, d_h))      # P [N,d_h]

        # K-head attention pooling: head k scores instance i as w_k · tanh(V_k h_i) + c_k.
        self.attn_hidden = nn.Linear(d_h, K * d_a)                                    # all V_k at once
        self.attn_out_weight = nn.Parameter(torch.empty(K, d_a))                      # w_k
        self.attn_out_bias = nn.Parameter(torch.zeros(K))                             # c_k
        nn.init.xavier_uniform_(self.attn_out_weight)

        # Classifier on [Z_cat ; F_p] → 2 logits.
        self.classifier = nn.Sequential(
            nn.Linear(K * d_h + 3, d_h),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(d_h, 2),
        )

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
        # Absolute positions within the window: a right-padded bag keeps its real rows' positions.
        h = self.proj(x) + POSITIONAL_SCALE * self.pos[:W]                             # [B,W,d_h]
        if cfg.history_window:
            h = h + self.history_out(self._history(h, mask))                          # [B,W,d_h]

        # --- prototype similarity (on the encoder output Z) --------------------------------------
        if cfg.use_prototypes:
            z = self.encoder(h, src_key_padding_mask=~mask).masked_fill(~real, 0.0)    # [B,W,d_h]
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
            q = torch.softmax(s / ASSIGNMENT_TEMPERATURE, dim=-1) * real               # [B,W,N]
            q_bar = q.sum(dim=1) / n_real[:, None]                                     # [B,N]
            ent = -(q_bar * torch.log(q_bar.clamp_min(1e-12))).sum(dim=-1)             # [B]
            E_bag = ent / math.log(cfg.num_prototypes) if cfg.num_prototypes > 1 else torch.zeros_like(ent)
        else:
            s = h.new_zeros(B, W, 0)
            m = h.new_zeros(B, W)
            M_bag = V_bag = E_bag = h.new_zeros(B)

        # --- K-head attention pooling over the local features h ----------------------------------
        # h is finite on padding (zeroed input plus positions), which the softmax masks out.
        hid = torch.tanh(self.attn_hidden(h)).view(B, W, cfg.attention_heads, -1)     # [B,W,K,d_a]
        scores = torch.einsum("bwkd,kd->bkw", hid, self.attn_out_weight)              # [B,K,W]
        scores = scores + self.attn_out_bias[None, :, None]
        if cfg.use_prototypes and cfg.use_candidate_bias:
            # Anomaly-candidate bias: instances far from every prototype get more attention a priori.
            scores = scores + (1.0 - m)[:, None, :]                                    # b_i broadcast over heads
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        attention = torch.softmax(scores, dim=-1)                                      # [B,K,W], 0 on padding
        z_heads = attention @ h                                                        # [B,K,d_h]

        # --- bag classifier ----------------------------------------------------------------------
        f_p = torch.stack([M_bag, E_bag, V_bag], dim=-1)                               # [B,3]
        logits = self.classifier(torch.cat([z_heads.reshape(B, -1), f_p], dim=-1))     # [B,2] from [Z_cat ; F_p]
        prob = torch.softmax(logits, dim=-1)[:, 1]                                     # [B]
        return LogMILPOutput(logits, prob, attention, m, M_bag, E_bag, V_bag, s, scores)

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

    def _check_inputs(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"x must be [B, W, {self.input_dim}] (the model's input_dim), got {tuple(x.shape)}")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = real instance), got dtype {mask.dtype}")
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be [B, W] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        if x.shape[1] > MAX_LEN:
            raise ValueError(f"bag length W={x.shape[1]} exceeds the model's max_len={MAX_LEN}")
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            idx = empty.nonzero().flatten().tolist()
            raise ValueError(f"bags {idx[:10]} have no real instance (mask all False); drop empty bags upstream")
