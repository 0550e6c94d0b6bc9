"""The model's and the loss's config sections. Plain dataclasses, no torch: a config is checked
before torch is imported. Measurements behind the defaults are in docs/experiments.md."""
from __future__ import annotations

from dataclasses import dataclass

from ray_logmilp.config.engine import require

# How the counterfactual removes a bag's key line: "zero" (the paper: the line stays with an empty
# embedding) or "mask" (the line leaves the bag through the mask).
PERTURBATION_MODES = ("zero", "mask")


def _require_int(value: object, key: str, low: int) -> None:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= low, key,
            f"must be an integer >= {low}, got {value!r}")


@dataclass
class ModelConfig:
    """Architecture of :class:`LogMILP`. The input size is not here: it comes from the template
    embeddings (``LogMILP(config, input_dim)``)."""

    hidden_dim: int = 128
    """d_h: latent size after the linear projection; also the Transformer's d_model. Even (sin/cos
    position pairs); each pooling head's scoring MLP is d_h / 2 wide."""
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
    use_prototypes: bool = True
    """Ablation switch. False: no prototypes and no encoder (nothing else reads it); F_p is fed to the
    classifier as zeros, so the classifier's input size, and the checkpoint's shapes, do not change."""
    use_candidate_bias: bool = True
    """Ablation switch: add b_i = 1 − m_i to the attention logits (needs use_prototypes)."""
    history_window: int = 16
    """R > 0: before the encoder, add to each line a summary of the R lines just before it,
    c_i = max_{k=1..R} (U h_{i−k} + o_k), as h_i + V c_i (ours, after DeepLog's history window: the
    hard anomalies are defined by what happened a few lines earlier). 0 = off (the paper's encoder)."""

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "encoder_layers", "encoder_heads", "ff_dim", "num_prototypes",
                     "attention_heads"):
            _require_int(getattr(self, name), name, 1)
        _require_int(self.history_window, "history_window", 0)
        require(self.hidden_dim % self.encoder_heads == 0, "hidden_dim",
                f"({self.hidden_dim}) must be divisible by encoder_heads ({self.encoder_heads})")
        require(self.hidden_dim % 2 == 0, "hidden_dim", f"must be even (sin/cos position pairs), got {self.hidden_dim}")
        require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class LossConfig:
    """Weights and margins of the LogMILP loss (paper eq. 3–4, plus our L_loc and L_inst). The paper
    gives none of the values."""

    lambda_p: float = 0.01
    """λ_p on L_proto, the prototype hinges. A nudge: at 0.1 the hinges outvoted the focal loss and the
    encoder collapsed."""
    lambda_a: float = 0.001
    """λ_a on L_attn, the attention entropy; an order of magnitude below λ_p (at 0.01 the attention went
    one-hot on arbitrary lines)."""
    lambda_c: float = 0.1
    """λ_c on L_con, the perturbation-consistency hinge (the paper's contribution, Table III)."""
    lambda_l: float = 0.05
    """λ_l on L_loc (ours; 0 = off): pull the key head's attention towards the line, among the most
    attended ones, whose removal lowers P most (``localization_targets``)."""
    lambda_i: float = 0.1
    """λ_i on L_inst (ours; 0 = off): mi-Net's max-pooling MIL loss on the pooling heads' line scores, so
    a negative bag pushes down its most anomalous-looking line and a positive bag lifts its top one.
    Not ramped in by ``regularizer_warmup_epochs`` (a constant score cannot satisfy both bag kinds)."""
    delta_p: float = 0.8
    """Δ_p: positive bags should have some instance with max prototype similarity M_bag ≥ Δ_p."""
    delta_e: float = 0.5
    """Δ_e: negative bags should spread over prototypes, normalised assignment entropy E_bag ≥ Δ_e."""
    delta_c: float = 0.5
    """Δ_c: removing the key instance of a positive bag should lower P by at least this much."""
    use_consistency: bool = True
    """Ablation switch: False skips the perturbed second forward pass and L_con."""
    perturbation: str = "zero"
    """How the key instance is removed: "zero" (the paper) or "mask" (drop it via the mask)."""
    regularizer_warmup_epochs: int = 5
    """λ_p, λ_a, λ_c and λ_l ramp linearly from 0 to their values over these epochs, so the classifier
    learns before the regularisers' degenerate optima can trap it. 0 disables the ramp."""

    def __post_init__(self) -> None:
        require(self.perturbation in PERTURBATION_MODES, "perturbation",
                f"must be one of {PERTURBATION_MODES}, got {self.perturbation!r}")
        _require_int(self.regularizer_warmup_epochs, "regularizer_warmup_epochs", 0)
        for name in ("lambda_p", "lambda_a", "lambda_c", "lambda_l", "lambda_i"):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
