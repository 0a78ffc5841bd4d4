"""The reward model's input text: one template shared by extraction, training, serving and online DPO.

It is the WildReward template (paper §2.2) so that RMs trained here and the released WildReward checkpoints
read the same input. The scale text says 1-5 although the head predicts 4 levels: that is how the paper's
models were trained, so we keep it. The user's feedback turn is never part of the input.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

NO_HISTORY = "No previous context."

_HEADER = """# Task Description
You are an expert conversation evaluator. Your task is to judge the **User's Satisfaction** with the Assistant's response based on the conversation context.
Please rate the response on a scale of 1 to 5 integers.
# Scoring Criteria
[1] CLEARLY NEGATIVE / REJECTION
[2] CORRECTION / ERROR POINTER (Negative)
[3] NEUTRAL
[4] POSITIVE ENGAGEMENT
[5] CLEAR SATISFACTION
# Input Data
## Context (History)
"""

_FOOTER = """
# Output
Based on the criteria above, please output ONLY the integer score (1, 2, 3, 4, or 5)."""


def format_history(history: Iterable[Mapping[str, str]] | None) -> str:
    """``[{role, content}, ...]`` -> ``"role: content"`` lines; empty history -> the paper's placeholder."""
    lines = [f"{m['role']}: {m['content']}" for m in (history or [])]
    return "\n".join(lines) if lines else NO_HISTORY


def build_rm_text(history: Iterable[Mapping[str, str]] | None, query: str, response: str) -> str:
    """Render one (history, query, response) into the RM input text."""
    return (_HEADER + format_history(history) + "\n## User Query\n" + query
            + "\n## Assistant Response\n" + response + _FOOTER).strip()
