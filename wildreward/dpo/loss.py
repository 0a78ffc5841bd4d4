"""DPO math: sequence log-probs, the DPO loss family, and a KL estimate.

``sequence_logps`` is the one log-prob function for both the policy and the reference. The original computed
them on two code paths (different padding handling, dtype and temperature), so its DPO logit at step 0 was
noise instead of 0; with one function and the same weights, it is exactly 0 and the loss exactly log 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def _token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position, in fp32: logit[target] - logsumexp(logits), no [.., vocab] log-softmax kept."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def sequence_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, *,
                   length_normalize: bool = False, chunk: int = 256) -> torch.Tensor:
    """Sum (or mean, with ``length_normalize``) of log p(token | prefix) over the response tokens: fp32 [batch].

    ``loss_mask`` [batch, seq] marks the response tokens (through the first EOS); token t is predicted by the
    logits at position t-1. Padding may be on either side: position ids are counted over real tokens only, so a
    left-padded row gets the same log-probs as without padding. (HF models number the pads too when given no
    position ids; rotary models do not mind the shift, models with absolute positions such as GPT-2 do.)

    Memory: the model returns logits for the response span only (``logits_to_keep``, which HF causal LMs take),
    in their own dtype; the fp32 upcast happens ``chunk`` positions at a time, and under autograd each chunk is
    recomputed in the backward pass instead of kept, so no fp32 [batch, seq, vocab] tensor ever exists at once
    (for Llama-3's 128k vocabulary that copy would be the largest tensor of the step).
    """
    attention_mask, loss_mask = attention_mask.bool(), loss_mask.bool()
    if loss_mask[:, 0].any():
        raise ValueError("loss_mask marks the first token, which no position predicts")
    if (loss_mask & ~attention_mask).any():
        raise ValueError("loss_mask marks padding tokens")
    n_tokens = loss_mask.sum(-1)
    if (n_tokens == 0).any():
        raise ValueError("a row has no response tokens")
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    first = int(loss_mask.any(0).nonzero()[0])  # first response column over the batch (>= 1, checked above)
    # Logits only from position first-1 on: the prompt region predicts nothing we need.
    logits = model(input_ids=input_ids, attention_mask=attention_mask.long(), position_ids=position_ids,
                   use_cache=False, logits_to_keep=input_ids.shape[1] - first + 1).logits[:, :-1]
    targets, mask = input_ids[:, first:], loss_mask[:, first:]  # logits[:, i] predicts targets[:, i]
    total = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    for s in range(0, mask.shape[1], chunk):
        piece, piece_targets = logits[:, s:s + chunk], targets[:, s:s + chunk]
        if torch.is_grad_enabled() and piece.requires_grad:
            logps = checkpoint(_token_logps, piece, piece_targets, use_reentrant=False)
        else:
            logps = _token_logps(piece, piece_targets)
        # where, not a product: a pad position's logits may be inf/NaN, and NaN * 0 is NaN
        total = total + torch.where(mask[:, s:s + chunk], logps, 0.0).sum(-1)
    return total / n_tokens if length_normalize else total


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float = 0.1, label_smoothing: float = 0.0,
             loss_type: str = "sigmoid") -> tuple[torch.Tensor, dict[str, float]]:
    """Mean DPO loss over pairs, and metrics; inputs are [pairs] sequence log-probs.

    With h = (πc - rc) - (πr - rr) and the DPO logit z = β·h:

    - ``sigmoid`` (DPO; ε = ``label_smoothing`` is conservative DPO): -(1-ε) log σ(z) - ε log σ(-z)
    - ``ipo``: (h - 1/(2β))²
    - ``hinge`` (SLiC): max(0, 1 - z)

    The reference log-probs are detached, so gradients reach the policy only, even if the reference was computed
    with autograd on (e.g. the same model at step 0). Metrics: the implicit rewards β(π - r) of chosen and
    rejected (means), their margin (mean z), and the share of pairs with z > 0.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError("label_smoothing applies to the sigmoid loss only")
    if not (policy_chosen.shape == policy_rejected.shape == ref_chosen.shape == ref_rejected.shape) \
            or policy_chosen.dim() != 1:
        raise ValueError("dpo_loss takes four [pairs] tensors of the same shape")
    if policy_chosen.numel() == 0:
        raise ValueError("dpo_loss needs at least one pair (the mean of none is NaN)")
    chosen = policy_chosen.float() - ref_chosen.detach().float()
    rejected = policy_rejected.float() - ref_rejected.detach().float()
    h = chosen - rejected
    z = beta * h
    if loss_type == "sigmoid":
        losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = torch.relu(1.0 - z)
    metrics = {"reward_chosen": (beta * chosen).mean().item(), "reward_rejected": (beta * rejected).mean().item(),
               "reward_margin": z.mean().item(), "reward_accuracy": (z > 0).float().mean().item()}
    return losses.mean(), metrics


def kl_estimate(policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor) -> float:
    """Per-token KL(policy || reference), estimated on samples drawn from the policy.

    ``policy_logps``/``ref_logps`` are summed (not length-normalised) sequence log-probs and ``n_tokens`` the
    response lengths. Σ(log π - log ref) / Σ n_tokens is the plain Monte-Carlo (k1) estimate: unbiased for
    the policy's own samples (all n per prompt, not only the chosen and rejected ones, which are selected by
    reward), noisy, and it can come out negative on a small batch.
    """
    total = n_tokens.sum().item()
    if total <= 0:
        raise ValueError("kl_estimate needs at least one token")
    return (policy_logps.detach().double() - ref_logps.detach().double()).sum().item() / total
