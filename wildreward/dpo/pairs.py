"""Scored samples -> one (chosen, rejected) pair per prompt: best vs worst of the prompt's own samples.

The original grouped samples by position after a batch re-ordering, so pairs mixed prompts; here samples are
grouped by ``prompt_id`` and nothing else. It also scored failed RM calls as 2.0 and trained on all-tie groups
(chosen == rejected, zero gradient, yet averaged into the loss); here both are dropped and counted.

Every prompt ends in exactly one bucket, so the counts reconcile:

    groups == groups_too_few + groups_all_tie + pairs_below_margin + pairs

where ``groups`` is the number of distinct prompt ids among all samples (a prompt whose samples all failed
scoring is ``groups_too_few``), and ``score_failures`` <= ``samples``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

THINK_END = "</think>"


def final_answer(text: str) -> str:
    """The text after the last ``</think>`` (the whole text when there is none), stripped: what the RM judges."""
    _, sep, tail = text.rpartition(THINK_END)
    return (tail if sep else text).strip()


def _scored(sample: Mapping) -> bool:
    reward = sample["reward"]
    return sample["error"] is None and reward is not None and math.isfinite(reward)


def build_pairs(samples: Iterable[Mapping], *, min_margin: float = 0.0) -> tuple[list[dict], dict[str, int]]:
    """Pair the best and worst scored sample of each prompt.

    ``samples``: rollout rows (``prompt_id, sample_index, response, reward, error, finished``) in any order;
    pairing reads ``prompt_id, sample_index, response, reward, error``. Truncated samples (``finished`` false)
    are paired like any other, as in the paper. A sample whose scoring failed (``error`` set, ``reward`` None or
    not finite) is dropped. Within a prompt, chosen = highest reward and rejected = lowest among the responses
    that differ from the chosen one (the same text twice gives a zero gradient: the original could pair a
    response with itself), ties going to the lowest ``sample_index``. A prompt with fewer than 2 scored samples,
    with all rewards equal or all responses the same (both counted as ``groups_all_tie``), or whose margin is
    below ``min_margin`` gives no pair.
    Pairs come out sorted by prompt id, so the result does not depend on the order of ``samples``.
    """
    counts = dict.fromkeys(("samples", "score_failures", "groups", "groups_too_few", "groups_all_tie",
                            "pairs_below_margin", "pairs"), 0)
    groups: dict[object, list[tuple[float, int, object]]] = {}
    seen: set[tuple[object, int]] = set()
    for sample in samples:
        key = (sample["prompt_id"], sample["sample_index"])
        if key in seen:
            raise ValueError(f"duplicate sample {key}: each (prompt_id, sample_index) must be unique")
        seen.add(key)
        counts["samples"] += 1
        scored = groups.setdefault(sample["prompt_id"], [])
        if _scored(sample):
            scored.append((float(sample["reward"]), sample["sample_index"], sample["response"]))
        else:
            counts["score_failures"] += 1
    counts["groups"] = len(groups)

    pairs = []
    for prompt_id in sorted(groups):
        scored = groups[prompt_id]
        if len(scored) < 2:
            counts["groups_too_few"] += 1
            continue
        # Highest reward first, lowest index first among equals; and the same for the lowest reward.
        chosen_reward, chosen_index, chosen_response = min(scored, key=lambda s: (-s[0], s[1]))
        others = [s for s in scored if s[2] != chosen_response]
        if not others:
            counts["groups_all_tie"] += 1
            continue
        rejected_reward, rejected_index, _ = min(others, key=lambda s: (s[0], s[1]))
        margin = chosen_reward - rejected_reward
        if margin == 0.0:
            counts["groups_all_tie"] += 1
        elif margin < min_margin:
            counts["pairs_below_margin"] += 1
        else:
            pairs.append({"prompt_id": prompt_id, "chosen_index": chosen_index, "rejected_index": rejected_index,
                          "chosen_reward": chosen_reward, "rejected_reward": rejected_reward, "margin": margin})
    counts["pairs"] = len(pairs)
    return pairs, counts
