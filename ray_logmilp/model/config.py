"""The model's and the loss's config sections. Plain dataclasses, no torch: a config is checked
before torch is imported."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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


@dataclass
class LossConfig:
    """Weights and margins of the LogMILP loss. The paper gives none of the values; ours are below."""

    focal_gamma: float = 2.0
    """γ of the focal loss (Lin et al.'s default): down-weights bags the model already gets right."""
    focal_alpha: float | None = 0.5
    """Weight of the positive (anomalous) class; negatives get 1 − α. None disables class weighting.
    0.5 (neutral) because training already draws positive and negative bags equally often (the paper's
    weighted sampler); Lin et al.'s 0.25 on top of that under-weighted positives threefold and stalled
    learning on the synthetic benchmark."""
    lambda_p: float = 0.01
    """λ_p on L_proto. F_p is a descriptor, not a score; the hinges only shape the prototype space.
    The paper gives no value. The focal loss of a bag near chance is ~0.09 (α = 0.5, γ = 2), so a weight
    of 0.1 let the hinges (~0.3) outvote it and the encoder collapsed; 0.01 keeps them a nudge."""
    lambda_a: float = 0.001
    """λ_a on L_attn. Entropy in [0, 1] pushes towards one-hot attention; kept an order of magnitude
    below λ_p for the same reason (at 0.01 the attention went one-hot on arbitrary lines)."""
    lambda_c: float = 0.1
    """λ_c on L_con. The consistency hinge is the method's contribution (Table III); its value at
    chance is Δ_c = 0.5, five times the focal loss, so 0.1 puts it on the classifier's scale. Tune it
    (tune/sweep.py searches λ_p, λ_a, λ_c on a log scale)."""
    delta_p: float = 0.8
    """Δ_p: positive bags should have some instance with max prototype similarity M_bag ≥ Δ_p."""
    delta_e: float = 0.5
    """Δ_e: negative bags should spread over prototypes, normalised assignment entropy E_bag ≥ Δ_e."""
    w_ent: float = 1.0
    """w_ent: weight of the negative-bag entropy hinge inside L_proto (Algorithm 1 line 7)."""
    delta_c: float = 0.5
    """Δ_c: removing the key instance of a positive bag should lower P by at least this much."""
    eps: float = 1e-8
    """ε inside log(A + ε) of the attention entropy (Algorithm 1 line 8)."""
    use_consistency: bool = True
    """Ablation switch: False skips the perturbed second forward pass and L_con."""
    perturbation: str = "zero"
    """How the key instance is removed: "zero" (the paper) or "mask" (drop it via the mask)."""
    regularizer_warmup_epochs: int = 5
    """λ_p, λ_a and λ_c ramp linearly from 0 to their values over these epochs. Early on the classifier
    cannot tell positive from negative bags, and at full strength from step 0 each regulariser has a
    degenerate optimum the model found first on the synthetic benchmark: the prototype hinges were met
    by collapsing every line onto one point (constant score), the entropy term by one-hot attention on
    an arbitrary line, the consistency hinge by scoring every bag high only with its top line. Letting
    the classifier learn first avoids those traps. 0 disables the ramp."""
    lambda_l: float = 0.05
    """λ_l on L_loc (ours, not in the paper; 0 = off; see docs/training.md): for each positive bag, try
    removing each of its ``localization_candidates`` most-attended lines, and pull the key head's
    attention towards the one whose removal lowers P most (``localization_targets``). The consistency
    hinge only asks that the top line matter; this asks that the top line be the one that matters most,
    which is what localization needs. It uses bag labels and the model's own scores only. 0.2 was
    degenerate on the benchmark corpus (AUC 0.79, Loc@3 0.06 after 800 steps); 0.05 is on the scale of
    the other terms."""
    localization_candidates: int = 4
    """How many of a positive bag's most-attended lines L_loc tries removing to find the one that matters."""
    lambda_i: float = 0.1
    """λ_i on L_inst (ours, not in the paper; 0 = off): multi-instance learning on the pooling heads'
    line scores (their attention logits, ``LogMILPOutput.scores``), as in mi-Net (Wang et al. 2018).
    Every line of a negative bag is normal, so each head's highest score there is pushed below 0; a
    positive bag holds at least one anomalous line, so each head's highest score is pushed above 0.
    The bag loss reaches a head only through the averaged features it pools; this scores the lines
    themselves, so a negative bag directly pushes down whichever of its lines looks most anomalous (a
    "close" after its own "open", say), and a positive bag lifts its most anomalous one. The softmax is blind to a
    common shift of a head's logits, so the term costs pooling nothing; it fixes the scale that
    ``ModelConfig.witness_scores`` reads. Not ramped in by ``regularizer_warmup_epochs``: unlike the
    other terms it has no degenerate optimum (a constant score cannot satisfy both bag kinds).
    On the 1M-line benchmark corpus (3 seeds, 2,400 steps, 2 CPU cores, test split) 0.1 against 0:
    Loc@1 0.926 vs 0.813, Loc@3 0.902 vs 0.850, SR 0.875 vs 0.832, for F1 0.906 vs 0.921; two more
    seeds on a GPU agreed. Localization is what the product is for, so 0.1 is the default; 0 gives
    back the last 1.5 points of F1 (docs/training.md)."""
    positive_cap: float | None = None
    """Ours, off (None, the paper) by default: a positive bag whose P has reached this value gets no
    classification loss, so nothing pushes it further towards 1 (negatives are not capped). Why: SR
    (eq. 6) asks that removing the key line lower P by more than δ_sr, also in windows with two or three
    anomalous lines (43% of the benchmark's positive windows), where the other anomalies remain. That
    needs a P that grows with the evidence; the focal loss pushes every positive bag to P ≈ 1, where one
    line more or less cannot move it. With ``positive_cap=0.5 delta_c=0.2 lambda_c=0.3`` and
    ``ModelConfig.evidence_counts`` (the "graded score" settings; Δ_c = 0.5 cannot hold three steps
    below P = 1) the hinge grades P instead: median P 0.58 / 0.73 / 0.83 for windows with one / two /
    three anomalous lines. On the 1M-line benchmark (3 seeds) SR 0.941 against 0.875, F1 0.917 against
    0.906, Loc@3 0.874 against 0.902, Loc@1 0.821 against 0.926. Not the default: an untrained model
    scores every bag near P = 0.5, so from the first step about half the positives get no loss, and on
    the serve tests' short run (8 × 40 steps) it never started learning (test AUC 0.65 against 1.00).
    With it P is an anomaly score read against the validation threshold, not a calibrated probability
    (docs/training.md, "The graded score")."""
    detach_p_orig: bool = False
    """Stop the gradient of P_orig inside L_con. Default False: the gradient flows through both passes.
    For positive bags L_con raises P_orig, which agrees with L_cls, and lowers P_pert, which is the point;
    detaching would only remove the first (harmless) half. Kept as a switch for experiments."""

    def __post_init__(self) -> None:
        if self.perturbation not in PERTURBATION_MODES:
            raise ValueError(f"LossConfig.perturbation must be one of {PERTURBATION_MODES}, "
                             f"got {self.perturbation!r}")
        if self.regularizer_warmup_epochs < 0:
            raise ValueError(f"LossConfig.regularizer_warmup_epochs must be >= 0, got {self.regularizer_warmup_epochs}")
        if self.localization_candidates < 1:
            raise ValueError(f"LossConfig.localization_candidates must be >= 1, got {self.localization_candidates}")
        for name in ("focal_gamma", "lambda_p", "lambda_a", "lambda_c", "lambda_l", "lambda_i", "w_ent", "eps"):
            if getattr(self, name) < 0:
                raise ValueError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.positive_cap is not None and not 0.5 <= self.positive_cap <= 1.0:
            raise ValueError(f"LossConfig.positive_cap must be in [0.5, 1] or None, got {self.positive_cap}")
        if self.focal_alpha is not None and not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"LossConfig.focal_alpha must be in [0, 1] or None, got {self.focal_alpha}")
