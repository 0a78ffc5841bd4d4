"""Refusal screening and validation, and the final raw-label -> level mapping (paper §1.6-1.7).

Users often give negative feedback to a correct safety refusal; that feedback is noise, not a signal about the
response. A cheap keyword screen finds refusal-like responses, an LLM judge (``annotate``) gives a verdict, and
``apply_refusal_verdict`` turns the verdict into a corrected raw label. Two variants exist because the paper and
the released code disagree (paper §7): ``paper`` only revisits negative labels and only ever raises them;
``code`` judges every refusal-like response and also pushes false refusals down to label 1.
"""
from __future__ import annotations

from wildreward.extract.config import RefusalConfig

# Lower-case phrases typical of short refusals. The English ones use a plain apostrophe; curly apostrophes are
# normalised before matching.
REFUSAL_KEYWORDS = (
    "i cannot", "i can't", "i can not", "i won't be able", "i'm not able to", "i am not able to",
    "i'm unable to", "i am unable", "as an ai", "as a language model", "sorry, but", "i'm sorry, i",
    "i apologize, but", "i must decline", "not appropriate for me", "against my guidelines",
    "抱歉", "对不起", "我无法", "我不能", "作为一个人工智能", "作为一个ai", "作为人工智能", "作为ai语言模型",
)

NEGATIVE_LABELS = frozenset({1, 2})
VERDICT_FALSE_REFUSAL, VERDICT_CORRECT_REFUSAL, VERDICT_ANSWERED = 0, 1, 2
RAW_TO_LEVEL = {1: 1, 2: 2, 4: 3, 5: 4}
NEUTRAL_RAW_LABEL = 3


def looks_like_refusal(response: str, max_chars: int) -> bool:
    """True when a short response contains a refusal phrase.

    Long responses are skipped: a refusal that then goes on for hundreds of characters usually answers after all,
    and the length cap keeps the judge's workload small (the original used 300 characters).
    """
    if len(response) >= max_chars:
        return False
    text = response.lower().replace("\u2019", "'")
    return any(keyword in text for keyword in REFUSAL_KEYWORDS)


def needs_refusal_check(raw_label: int, response: str, cfg: RefusalConfig) -> bool:
    """Whether the refusal judge must see this turn; only screened turns cost an LLM call."""
    if not cfg.enabled or not looks_like_refusal(response, cfg.max_response_chars):
        return False
    if cfg.variant == "paper":
        return raw_label in NEGATIVE_LABELS
    return True


def apply_refusal_verdict(raw_label: int, verdict: int, variant: str) -> int:
    """The raw label after the judge's verdict (0 false refusal, 1 correct refusal, 2 the model answered).

    paper: a correct refusal that drew negative feedback is relabelled 5 (level 4), since the user's complaint was
    unjustified; everything else keeps its label. code: a correct refusal becomes 5 and a false refusal 1 whatever
    the original label; an answer keeps its label.
    """
    if verdict not in (VERDICT_FALSE_REFUSAL, VERDICT_CORRECT_REFUSAL, VERDICT_ANSWERED):
        raise ValueError(f"refusal verdict must be 0, 1 or 2, got {verdict!r}")
    if variant == "paper":
        if verdict == VERDICT_CORRECT_REFUSAL and raw_label in NEGATIVE_LABELS:
            return 5
        return raw_label
    if variant == "code":
        return {VERDICT_CORRECT_REFUSAL: 5, VERDICT_FALSE_REFUSAL: 1}.get(verdict, raw_label)
    raise ValueError(f"refusal variant must be 'paper' or 'code', got {variant!r}")


def map_label(raw: int) -> int | None:
    """Raw annotator label (1-5) -> ordinal level (1-4); neutral (3) gives None because it carries no preference."""
    if raw == NEUTRAL_RAW_LABEL:
        return None
    if raw not in RAW_TO_LEVEL:
        raise ValueError(f"raw label must be an integer 1-5, got {raw!r}")
    return RAW_TO_LEVEL[raw]
