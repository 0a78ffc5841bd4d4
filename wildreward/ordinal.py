"""Ordinal reward math (paper §2.1), pure functions shared by training, evaluation and serving.

A K-level label y in 1..K becomes K-1 cumulative binary targets [y>1, ..., y>K-1]. The model emits K-1 logits
f_k; σ(f_k) estimates P(y > k). The reward is the expected level ``1 + Σ_k σ(f_k)`` in [1, K].

Two heads produce the logits:

- ``independent`` (the paper's code): K-1 unconstrained logits from a linear head; BCE per threshold.
- ``coral``: one scalar score s minus K-1 learned, ordered cut-points, ``f_k = s - θ_k`` (a cumulative-link
  model); P(y > k) is then monotone in k by construction and the reward is monotone in s.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Levels 1-2 are the user's dissatisfaction (annotator ratings 1-2), 3-4 satisfaction (ratings 4-5); neutral
# turns are dropped or relabelled by mining before training.
def satisfied_min_level(num_levels: int) -> int:
    """The lowest level that means "satisfied": the upper half of the scale, without the middle level of an odd
    one (neutral). 3 of 4; 4 of 5; 2 of 2."""
    return (num_levels + 1) // 2 + 1


SATISFIED_MIN_LEVEL = satisfied_min_level(4)  # the paper's four levels


def ordinal_targets(labels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Levels 1..K -> float targets [B, K-1] with column k-1 = 1(y > k)."""
    thresholds = torch.arange(1, num_levels, device=labels.device)
    return (labels.unsqueeze(-1) > thresholds).to(torch.float32)


def ordinal_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over thresholds and batch (as the paper's code; the paper writes the sum).
    ``pos_weight`` [K-1] multiplies the positive term of each threshold (see ``balanced_pos_weights``)."""
    targets = ordinal_targets(labels, logits.shape[-1] + 1)
    return F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=pos_weight)


def balanced_pos_weights(label_counts: dict[int, int], num_levels: int, cap: float) -> list[float]:
    """Per threshold k, n(y <= k) / n(y > k) capped at ``cap``: positives and negatives then weigh the same in
    that threshold's loss. In-the-wild feedback is skewed (paper Fig. 1: 17% negative vs 7% positive before the
    neutral turns are dropped), and with a weak annotator one level can hold nearly every row, which an unweighted
    loss answers with a constant reward. A threshold with no positives or no negatives keeps weight 1."""
    weights = []
    for k in range(1, num_levels):
        above = sum(n for level, n in label_counts.items() if level > k)
        below = sum(n for level, n in label_counts.items() if level <= k)
        weights.append(min(cap, below / above) if above and below else 1.0)
    return weights


def expected_rating(logits: torch.Tensor) -> torch.Tensor:
    """Reward readout ``1 + Σ σ(f_k)`` in [1, K]."""
    return 1.0 + torch.sigmoid(logits.float()).sum(-1)


def level_probs(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities [B, K] from cumulative ones: p(y=j) = P(y>j-1) - P(y>j).

    The independent head does not guarantee P(y>1) >= P(y>2) >= ...; a running minimum makes the cumulative
    probabilities monotone first, so every class probability is >= 0 and they sum to 1. For the coral head
    this changes nothing.
    """
    cum = torch.cummin(torch.sigmoid(logits.float()), dim=-1).values
    ones = torch.ones_like(cum[..., :1])
    zeros = torch.zeros_like(cum[..., :1])
    upper = torch.cat([ones, cum], dim=-1)
    lower = torch.cat([cum, zeros], dim=-1)
    return upper - lower


def predicted_level(logits: torch.Tensor) -> torch.Tensor:
    """``1 + #{k : σ(f_k) > 0.5}``: the usual CORAL decision rule."""
    return 1 + (logits > 0).sum(-1)


def ordered_cutpoints(raw: torch.Tensor) -> torch.Tensor:
    """Unconstrained [K-1] -> strictly increasing cut-points θ_1 < θ_2 < ... (θ_1 = raw_0, gaps softplus)."""
    return torch.cat([raw[:1], raw[:1] + torch.cumsum(F.softplus(raw[1:]), dim=0)])


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based): linear warmup to the peak
    over ``warmup_steps`` (the first step already gets 1/warmup), then ``linear`` or ``cosine`` decay to 0 at
    ``total_steps``, or ``constant``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + float(np.cos(np.pi * progress)))
    raise ValueError(f"unknown schedule {schedule!r}")


def ordinal_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Held-out metrics: ordinal accuracy (CORAL rule), MAE of the expected rating, Spearman between the
    expected rating and the label, and AUC per threshold (NaN where the held-out set has one class only)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("ordinal_metrics needs at least one example")
    probs = 1.0 / (1.0 + np.exp(-logits))
    rating = 1.0 + probs.sum(-1)
    out = {
        "n": float(len(labels)),
        "accuracy": float(np.mean(1 + (logits > 0).sum(-1) == labels)),
        "mae": float(np.mean(np.abs(rating - labels))),
        "spearman": float(spearmanr(rating, labels).statistic) if len(set(labels.tolist())) > 1 else float("nan"),
        "mean_rating": float(rating.mean()),
    }
    for k in range(1, logits.shape[-1] + 1):
        target = labels > k
        both = 0 < target.sum() < len(target)
        out[f"auc_gt{k}"] = float(roc_auc_score(target, probs[:, k - 1])) if both else float("nan")
    return out
