"""Verifiable instruction-following checks for evaluating a DPO policy without a judge (IFEval-style).

Each check is a prompt with one checkable instruction and a deterministic checker of the response's final answer
(the text after any ``</think>``). The paper reports IFEval gains from online DPO; this is a small in-repo proxy
that runs anywhere, not a replacement for IFEval.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from wildreward.dpo.pairs import final_answer


@dataclass(frozen=True)
class Check:
    id: str
    prompt: str
    passes: Callable[[str], bool]


def _has_letters(text: str) -> bool:
    return any(c.isalpha() for c in text)


def max_words(n: int) -> Callable[[str], bool]:
    return lambda text: 0 < len(text.split()) <= n


def keywords(*words: str) -> Callable[[str], bool]:
    return lambda text: all(re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE) for w in words)


def json_with_key(key: str) -> Callable[[str], bool]:
    def passes(text: str) -> bool:
        # A ```json fence around the object is accepted, as IFEval does.
        body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip(), flags=re.IGNORECASE)
        try:
            value = json.loads(body)
        except ValueError:
            return False
        return isinstance(value, dict) and key in value
    return passes


def bullet_count(n: int) -> Callable[[str], bool]:
    # Markdown bullets: "- item" or "* item" (not "**bold**").
    return lambda text: len(re.findall(r"^\s*(?:-|\*(?!\*))\s+\S", text, re.MULTILINE)) == n


def ends_with(phrase: str) -> Callable[[str], bool]:
    return lambda text: text.rstrip().endswith(phrase)


def all_lowercase(text: str) -> bool:
    return _has_letters(text) and text == text.lower()


def all_uppercase(text: str) -> bool:
    return _has_letters(text) and text == text.upper()


def no_commas(text: str) -> bool:
    return _has_letters(text) and "," not in text


def paragraph_count(n: int) -> Callable[[str], bool]:
    return lambda text: len([p for p in re.split(r"\n\s*\n", text) if p.strip()]) == n


def has_title(text: str) -> bool:
    return re.search(r"<<[^<>\n]*\S[^<>\n]*>>", text) is not None


CHECKS: tuple[Check, ...] = (
    Check("max_words_20", "In at most 20 words, explain why the sky is blue.", max_words(20)),
    Check("keywords", "Write two sentences about autumn that use the words 'maple' and 'harvest'.",
          keywords("maple", "harvest")),
    Check("json_key", 'Answer in JSON only: an object with the key "capital" whose value is the capital of '
                      'France.', json_with_key("capital")),
    Check("bullets_3", "List exactly 3 benefits of regular exercise as markdown bullet points, and nothing else.",
          bullet_count(3)),
    Check("end_phrase", "Give one tip for sleeping better. End your response with the exact phrase "
                        "'Is there anything else I can help with?'",
          ends_with("Is there anything else I can help with?")),
    Check("lowercase", "Describe a cat in a few sentences, using only lowercase letters: no capital letters at "
                       "all.", all_lowercase),
    Check("uppercase", "Explain what a rainbow is in two sentences, written entirely in CAPITAL LETTERS.",
          all_uppercase),
    Check("no_commas", "Describe your ideal weekend in three sentences without using any commas.", no_commas),
    Check("paragraphs_2", "Write exactly 2 paragraphs about the ocean, separated by one blank line.",
          paragraph_count(2)),
    Check("title", "Write a four-line poem about rain. Give it a title wrapped in double angular brackets, "
                   "such as <<title>>.", has_title),
)


def run_checks(responses_by_id: Mapping[str, str | Sequence[str]],
               checks: Sequence[Check] = CHECKS) -> dict[str, float]:
    """Pass rate per check (over the responses given for it: one or several samples) and ``overall``, the mean
    of the per-check rates. Every check needs at least one response, and unknown ids are an error."""
    by_id = {c.id: c for c in checks}
    unknown, missing = set(responses_by_id) - set(by_id), set(by_id) - set(responses_by_id)
    if unknown or missing:
        raise ValueError(f"responses do not match the checks: unknown {sorted(unknown)}, missing {sorted(missing)}")
    rates = {}
    for check in checks:
        given = responses_by_id[check.id]
        texts = [given] if isinstance(given, str) else list(given)
        if not texts:
            raise ValueError(f"no response for check {check.id!r}")
        rates[check.id] = sum(check.passes(final_answer(t)) for t in texts) / len(texts)
    rates["overall"] = sum(rates.values()) / len(rates)
    return rates
