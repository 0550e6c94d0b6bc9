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

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ModelConfig",
    "LogMILPOutput",
    "LogMILP",
    "attention_entropy",
    "key_head_attention",
    "perturb_key_instance",
]

PERTURBATION_MODES = ("zero", "mask")
ATTENTION_INPUTS = ("encoder", "local", "line")
BAG_CLASSIFIERS = ("concat", "heads")


@dataclass
class ModelConfig:
    """Architecture of :class:`LogMILP`. Serialisable with ``dataclasses.asdict`` / :meth:`from_dict`."""

    input_dim: int = 0
    """d: size of one instance embedding (the embedder's output dimension). 0 means "not known yet":
    a project config leaves it at 0 and training fills it in from the template embeddings; building a
    LogMILP with 0 is an error."""
    hidden_dim: int = 128
    """d_h: latent size after the linear projection; also the Transformer's d_model."""
    encoder_layers: int = 2
    """Transformer encoder layers (the paper uses two)."""
    encoder_heads: int = 4
    """Self-attention heads in each encoder layer; must divide hidden_dim."""
    ff_dim: int = 256
    """Feed-forward width inside each encoder layer."""
    dropout: float = 0.1
    """Dropout in the encoder and the classifier (not in the attention pooling, so weights stay crisp)."""
    num_prototypes: int = 16
    """N: learnable prototype vectors in the latent space."""
    attention_heads: int = 4
    """K: attention-pooling heads; the bag representation Z_cat has K·d_h entries."""
    attention_dim: int = 64
    """Hidden width of each pooling head's scoring MLP (tanh → linear)."""
    assignment_temperature: float = 0.1
    """τ of the soft prototype assignment softmax(s_ij / τ) behind E_bag. s_ij lies in [1/3, 1] (unit
    vectors are at most 2 apart), so τ = 1 would give a near-uniform assignment and E_bag ≈ 1 always;
    τ = 0.1 spreads the logits over a range of ~6.7, enough for E_bag to span (0, 1)."""
    use_prototypes: bool = True
    """Ablation switch. False: no prototypes at all (no parameters, no candidate bias); F_p is fed to the
    classifier as zeros so the classifier input size, and hence checkpoint shapes, do not change."""
    use_candidate_bias: bool = True
    """Ablation switch: add b_i = 1 − m_i to the attention logits (needs use_prototypes)."""
    positional_encoding: bool = True
    """Add a fixed sinusoidal position code after the projection. Not in the paper (its encoder input is
    H = XW + b only); ours, because a Transformer without positions is permutation-equivariant and could
    never learn anomalies that are defined by the order of otherwise normal lines."""
    positional_scale: float = 0.1
    """Multiplier on the unit-norm position code. Full strength drowned the projected template embedding
    (norm ~0.5), so self-attention keyed on positions and learning stalled; 0.1 keeps order visible."""
    norm_first: bool = True
    """Pre-LayerNorm encoder layers (plus a final LayerNorm). Post-LN (PyTorch's default) trained poorly
    here: self-attention mixed the one anomalous line into its 63 neighbours and the bag loss stalled at
    chance; pre-LN keeps each line's own representation on the residual path."""
    max_len: int = 4096
    """Longest bag accepted when positional_encoding is on (size of the position table)."""
    relative_window: int = 0
    """R > 0: add a learned relative-position bias to the encoder's self-attention logits, one value per
    head and per signed offset j − i in [−R, R] (offsets beyond R share the end values). Not in the paper;
    ours, because the hard anomalies are defined by what happened a few lines *before* a line (a trigger,
    a missing "open"), and a bias on the offset lets a head look exactly there, before or after, at any
    absolute position. 0 = off (the encoder then sees order only through the absolute position code)."""
    history_window: int = 16
    """R > 0: before the encoder, give each line a summary of the R lines just before it in the bag:
    c_i = max_{k=1..R} (U h_{i−k} + o_k), added back as h_i + V c_i (U, V learned linear maps, o_k a learned
    per-offset bias so near and far lines can count differently). Not in the paper; ours, in the spirit
    of DeepLog's history window: the hard anomalies are defined by what happened a few lines *before* a
    line (a trigger, a missing "open"), and a max over a short history turns "template T occurred within
    the last few lines" into one feature of the line itself. The Transformer can in principle learn
    this, but from window labels alone it did not: on the 1M-line benchmark corpus, validation AUC 0.86
    without the summary and 0.97 with it, both after 1,500 steps of plain cross-entropy. The evidence
    then sits on the anomalous line, but also on the lines after it, whose histories include it;
    L_loc (LossConfig.lambda_l) is what makes the heads prefer the anomaly over those carriers.
    0 = off (the paper's encoder)."""
    pooled_values: str = "local"
    """What the pooling heads average: "local" (each line's own features H plus its history summary, as
    the heads score them; with LossConfig.lambda_l > 0) or "encoder" (the paper: Z). Ours, for
    localization: averaging Z lets a head read the whole window through whichever line it attends, so
    the attended line need not be the one that matters; averaging the lines' own features makes the
    classifier see only what the heads pick. With L_loc on the 1M-line benchmark corpus, validation
    after 1,200 steps: AUC 0.975, Loc@3 0.754, SR 0.767 with "local" against AUC 0.938, Loc@3 0.556,
    SR 0.581 with "encoder". The encoder still shapes the prototypes (F_p)."""
    witness_scores: bool = False
    """Also give the classifier each head's highest line score, max_i of its attention logit (the
    "witness" of max-pooling MIL, Wang et al. 2018). Not in the paper; ours, off by default. Attention
    pooling averages the attended lines' features and its logits are free up to a shift, so a high
    logit means nothing on its own; with the maximum in the classifier's input, a negative bag pushes
    down the score of every one of its lines and a positive bag needs one line scored high. On the
    1M-line benchmark corpus (3 seeds, 2,400 steps, test split) it did not beat the default: F1 0.891
    ± 0.005, Loc@3 0.731 ± 0.070, SR 0.767 ± 0.030 with it, against 0.900 ± 0.006, 0.713 ± 0.004 and
    0.773 ± 0.001 without (two seeds localized better, one worse). See docs/training.md."""
    localizer_head: bool = False
    """Add one attention head that localizes and does not pool (ours, off by default). The K pooling
    heads then feed the classifier only, and the output's ``attention`` is the localizer's alone
    ([B,1,W]), so it is the key head of localization, of the training perturbation and of L_loc, and
    the one L_attn sharpens; ``scores`` keep all K + 1 heads' logits for L_inst. Why: the
    counterfactual terms pull the pooling heads onto the one removable line, and the classifier then
    sees only that line: without the terms, validation F1 kept rising to 0.953 (test 0.958, seed 1)
    while SR fell to 0.08, and with them F1 flattened at 0.91–0.92. With a separate localizer, L_loc
    trains it to point at the line whose removal lowers the classifier's P most, and the pooling heads
    stay free to gather the evidence (the hinge still shapes P). Off: on the benchmark (seeds 0 / 1,
    2,400 steps, test split) F1 0.912 / 0.933, Loc@3 0.869 / 0.830, SR 0.769 / 0.724, against the
    defaults' 0.906, 0.902, 0.875 (3 seeds): the pooling heads gathered redundant evidence again, so
    removing the one line the localizer picks moved P less often."""
    evidence_counts: bool = False
    """Also give the classifier each head's soft count of flagged lines, n_k = Σ_i σ(s_ik) over the real
    lines, where s_ik is head k's attention logit for line i. Not in the paper; ours, off by default.
    Softmax pooling is normalised: with two anomalous lines in a window, removing the top one moves the
    attention to the other and the pooled features barely change, so P cannot drop and SR (eq. 6) fails
    on every window with more than one anomalous line (on the benchmark corpus 43% of positive windows
    hold 2 or 3; SR on them was 0.68–0.86 against 0.97 with one). The count is additive: removing a
    flagged line lowers it by about one, removing a normal line (σ ≈ 0) by about nothing, so the
    consistency hinge has a way to make the key line matter that the softmax does not offer. Padding
    has logit −inf and counts 0. Off: on the benchmark (seed 0, 2,400 steps, test split) it raised SR
    on windows with several anomalous lines (0.79 against 0.71 for the default's 3 seeds) but not
    overall by more than seed noise, and cost F1 (0.904 against 0.921 for the same seed); with L_inst it
    gave F1 0.919, Loc@3 0.885, SR 0.850 against 0.906, 0.884, 0.875 without (docs/training.md). The
    focal loss still pushed every positive window to P ≈ 1 whatever the count; with
    ``LossConfig.positive_cap`` P grades on it (SR 0.941, 3 seeds; see there)."""
    bag_classifier: str = "concat"
    """How the bag score is read from the heads: "concat" (the paper: one MLP on [Z_cat ; F_p]) or "heads"
    (ours: head k has its own small MLP on [z_k ; F_p] giving a logit ℓ_k, and the bag logit is the
    smooth maximum logsumexp_k ℓ_k). A bag is anomalous when *some* line is, so with "heads" a head that
    found the anomaly raises P on its own and the other heads cannot talk it down; with "concat" what
    the other heads pooled (a benign open/close pair, say) can, and on the benchmark corpus rare windows
    whose top line was the rare line still scored P < 0.5. Each head's MLP is d_h / K wide, so at K = 4
    the "heads" classifier has about a quarter of the concat classifier's parameters (17k against 66k
    at d_h = 128)."""
    attention_input: str = "local"
    """What the pooling heads score: "local" (the line's own features before the encoder: H plus its
    history summary), "line" (H alone, no history) or "encoder" (the paper: the Transformer output Z).
    Ours, for localization: self-attention spreads a line's evidence over the whole window, so heads
    that score Z have no reason to pick the anomalous line (on the 1M-line benchmark corpus, validation
    Loc@3 0.10 and SR 0.06 after 2,400 steps), while heads that score the line itself do (Loc@3 0.46,
    SR 0.41 after 1,600 steps, at a similar AUC: 0.94 there, and 0.94 / 0.97 for the encoder variant
    after 1,200 / 2,400 steps)."""

    def __post_init__(self) -> None:
        if not isinstance(self.input_dim, int) or isinstance(self.input_dim, bool) or self.input_dim < 0:
            raise ValueError(f"ModelConfig.input_dim must be a non-negative integer, got {self.input_dim!r}")
        for name in ("hidden_dim", "encoder_layers", "encoder_heads", "ff_dim",
                     "num_prototypes", "attention_heads", "attention_dim", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        for name in ("relative_window", "history_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"ModelConfig.{name} must be a non-negative integer, got {value!r}")
        if self.pooled_values not in ("encoder", "local"):
            raise ValueError(f"ModelConfig.pooled_values must be 'encoder' or 'local', got {self.pooled_values!r}")
        if self.bag_classifier not in BAG_CLASSIFIERS:
            raise ValueError(f"ModelConfig.bag_classifier must be one of {BAG_CLASSIFIERS}, got {self.bag_classifier!r}")
        if self.attention_input not in ATTENTION_INPUTS:
            raise ValueError(f"ModelConfig.attention_input must be one of {ATTENTION_INPUTS}, got {self.attention_input!r}")
        if self.hidden_dim % self.encoder_heads:
            raise ValueError(f"ModelConfig.hidden_dim ({self.hidden_dim}) must be divisible by "
                             f"ModelConfig.encoder_heads ({self.encoder_heads})")
        if self.positional_encoding and self.hidden_dim % 2:
            raise ValueError(f"ModelConfig.hidden_dim must be even when positional_encoding is on "
                             f"(sin/cos pairs), got {self.hidden_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if not self.assignment_temperature > 0:
            raise ValueError(f"ModelConfig.assignment_temperature must be > 0, got {self.assignment_temperature}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a plain dict (e.g. a bundle's config.json); unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**d)


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
