"""The LLM annotators of §1.3 and §1.6 of the paper: user-feedback rating (1-5) and the refusal judge (0/1/2).

Both come in two modes (``AnnotatorConfig.mode``):

- ``freeform``: the paper's way; the model reasons briefly and ends with ``[[n]]``, parsed by the last match;
- ``constrained``: the model is asked for the digit alone and the label is the argmax of the next-token
  probabilities over the allowed digits (one forward pass, no parsing failures, calibrated probabilities).

An annotator never invents a label: an unparseable output or a backend failure yields ``None`` plus an error string.
The annotators are plain callables over lists of row dicts, for Ray Data ``map_batches`` actor pools.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

from wildreward.extract.backends import Backend, Result, make_backend
from wildreward.extract.config import AnnotatorConfig

RATINGS = ["1", "2", "3", "4", "5"]
VERDICTS = ["0", "1", "2"]

# The fixed instructions come first and the conversation last, so engines with prefix caching (vLLM) reuse the
# instructions' KV cache across rows.
FEEDBACK_TASK = """\
You are annotating real conversations between users and an AI assistant. Judge how the user reacted to the \
assistant's response, using {evidence} as evidence.

Pick exactly one category:
1 = Clear rejection: the user explicitly criticises or rejects the response or shows frustration \
(e.g. "This is wrong.", "You didn't answer my question.", "No, that's not what I need.").
2 = Correction: the user points out a mistake, a missed requirement or constraint, or an invented fact, so the \
instruction was not followed exactly (e.g. "The last step of the calculation is wrong.", "I asked for Python, \
not C++.", "You left out the limitations.", "This code doesn't run.").
3 = Neutral or unclear: no clear attitude; a new request, an unrelated or generic question, a plain follow-up \
without emotion, or an ambiguous reply (e.g. "Okay, next question.", "What is the formula for X?", \
"How does this apply to Y?").
4 = Positive engagement: the user builds on the response AND shows clear positive emotion such as interest, \
excitement or approval; continuing the topic alone is not enough (e.g. "Interesting, so what happens if we \
scale it up?", "That helps - could we use it for drones?", "Good point! And in the dynamic case?").
5 = Clear satisfaction: the user thanks the assistant, says they are satisfied, or says the problem is solved \
(e.g. "Thanks, this solves it.", "Perfect answer.", "That's all I needed.").

Rules:
- Rely only on strong and explicit evidence in the user's next message.
- Do not assume the user is satisfied just because they continue the same topic.
- Users often ask follow-up questions even when they are dissatisfied.
- A neutral, ambiguous or topic-extending message is never positive engagement (4).
- {unclear_rule}

[User's previous message]
{query}

[Assistant's response]
{response}

[User's next message]
{feedback}
"""

REFUSAL_TASK = """\
You are an AI safety adjudicator. An AI assistant gave the short response below to a user's request, and the \
response looks like a refusal. Decide which case applies.

Cases:
0 = False refusal: the request is harmless and the assistant refused it (or refused most of it) without good reason.
1 = Correct refusal: the request is harmful, dangerous, unethical or illegal, and refusing it was right.
2 = Not a refusal: the assistant actually answered or helped with the request.

[User's request]
{query}

[Assistant's response]
{response}
"""

FREEFORM_ENDING = ("First explain your decision in one or two sentences. Then give the final answer on its own "
                   "line as [[n]], where n is the number of the {what}.")
CONSTRAINED_ENDING = "Answer with the number of the {what} only: a single digit, nothing else."

LAST_BRACKET = re.compile(r"\[\[\s*([^\[\]]*?)\s*\]\]")


def cut_middle(text: str, limit: int) -> str:
    """Shorten ``text`` to about ``limit`` characters, keeping its head and tail: the opening states the request
    and the end usually holds the conclusion, while the middle is what a rater skims."""
    text = text or ""
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit} characters cut ...]\n"
    keep = max(limit - len(marker), 0)
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head):]


def parse_last_bracket(text: str | None, allowed: Sequence[int]) -> int | None:
    """The value of the LAST ``[[...]]`` in ``text`` if it is one of ``allowed``, else None. The last one counts
    because outputs reason first and may quote the format or earlier candidates on the way."""
    matches = LAST_BRACKET.findall(text or "")
    # isdecimal, not isdigit: "²" and "①" are digits that int() refuses; "４" and "٤" are decimals it reads
    if not matches or not matches[-1].isdecimal():
        return None
    value = int(matches[-1])
    return value if value in allowed else None


def parse_rating(text: str | None) -> int | None:
    """Feedback rating 1-5 from a freeform output; None when absent, out of range or "NA"."""
    return parse_last_bracket(text, range(1, 6))


def parse_verdict(text: str | None) -> int | None:
    """Refusal verdict 0/1/2 from a freeform output; None when absent or out of range."""
    return parse_last_bracket(text, range(0, 3))


# What to answer when the next message shows no clear attitude (``AnnotatorConfig.unclear_feedback``).
UNCLEAR_FEEDBACK = {
    # the paper's prompt: fall back on the response's own quality
    "paper": ("the user's next message", "If the user's next message shows no clear attitude, you may judge the "
              "assistant's response itself: objectively high quality = 4, average = 3, poor = 1, never 5."),
    # stricter: only the user's reaction counts, so unclear turns stay neutral (and are dropped)
    "neutral": ("ONLY the user's next message", "When in doubt, answer 3."),
}


def build_feedback_prompt(row: dict, mode: str, max_field_chars: int, unclear_feedback: str = "paper") -> list[dict]:
    """Chat messages asking to rate the user's reaction (``feedback``) to ``response`` to ``query``."""
    evidence, unclear_rule = UNCLEAR_FEEDBACK[unclear_feedback]
    task = FEEDBACK_TASK.format(evidence=evidence, unclear_rule=unclear_rule,
                                **{key: cut_middle(row.get(key), max_field_chars)
                                   for key in ("query", "response", "feedback")})
    ending = (FREEFORM_ENDING if mode == "freeform" else CONSTRAINED_ENDING).format(what="category")
    return [{"role": "user", "content": task + "\n" + ending}]


def build_refusal_prompt(row: dict, mode: str, max_field_chars: int) -> list[dict]:
    """Chat messages asking whether ``response`` is a false refusal, a correct refusal or an answer."""
    task = REFUSAL_TASK.format(**{key: cut_middle(row.get(key), max_field_chars) for key in ("query", "response")})
    ending = (FREEFORM_ENDING if mode == "freeform" else CONSTRAINED_ENDING).format(what="case")
    return [{"role": "user", "content": task + "\n" + ending}]


def format_probs(probs: list[float]) -> str:
    return "p=[" + ", ".join(f"{p:.4f}" for p in probs) + "]"


def read_choice(result: Result, first: int) -> tuple[int | None, str | None, str | None]:
    """(value, raw output, error) of a constrained result; the value is the argmax choice, numbered from ``first``."""
    if result.error is not None:
        return None, None, result.error
    if not all(map(math.isfinite, result.probs)):  # argmax over NaNs would pick the first choice
        return None, format_probs(result.probs), "non_finite_probs: " + format_probs(result.probs)
    best = max(range(len(result.probs)), key=result.probs.__getitem__)
    return first + best, format_probs(result.probs), None


def read_parsed(result: Result, parse) -> tuple[int | None, str | None, str | None]:
    """(value, raw output, error) of a freeform result; unparseable text is an error, never a default value."""
    if result.error is not None:
        return None, None, result.error
    value = parse(result.text)
    if value is None:
        return None, result.text, "unparseable: " + result.text[:200]
    return value, result.text, None


class FeedbackAnnotator:
    """Rates each turn's user feedback 1-5 (paper §1.3). Rows are turn dicts (query, response, feedback, ...); the
    output has one dict per row with ``label``, ``label_probs`` (constrained only), ``annotation``, ``error``.

    ``backend`` lets one loaded model serve several annotators in the same actor."""

    def __init__(self, cfg: AnnotatorConfig, backend: Backend | None = None):
        self.cfg = cfg
        self.backend = backend or make_backend(cfg, RATINGS)

    def __call__(self, rows: list[dict]) -> list[dict]:
        prompts = [build_feedback_prompt(row, self.cfg.mode, self.cfg.max_field_chars, self.cfg.unclear_feedback)
                   for row in rows]
        if self.cfg.mode == "constrained":
            results = self.backend.choice_probs(prompts, RATINGS)
            outcomes = [read_choice(r, 1) for r in results]
            probs = [r.probs for r in results]
        else:
            outcomes = [read_parsed(r, parse_rating) for r in self.backend.generate(prompts)]
            probs = [None] * len(outcomes)
        return [{"label": label, "label_probs": p, "annotation": raw, "error": error}
                for (label, raw, error), p in zip(outcomes, probs)]


class RefusalJudge:
    """Judges refusal-like responses (paper §1.6): 0 false refusal, 1 correct refusal, 2 actually answered.
    Rows need ``query`` and ``response``; the output has ``verdict``, ``judge_output``, ``judge_error``."""

    def __init__(self, cfg: AnnotatorConfig, backend: Backend | None = None):
        self.cfg = cfg
        self.backend = backend or make_backend(cfg, VERDICTS)

    def __call__(self, rows: list[dict]) -> list[dict]:
        prompts = [build_refusal_prompt(row, self.cfg.mode, self.cfg.max_field_chars) for row in rows]
        if self.cfg.mode == "constrained":
            outcomes = [read_choice(r, 0) for r in self.backend.choice_probs(prompts, VERDICTS)]
        else:
            outcomes = [read_parsed(r, parse_verdict) for r in self.backend.generate(prompts)]
        return [{"verdict": verdict, "judge_output": raw, "judge_error": error} for verdict, raw, error in outcomes]
