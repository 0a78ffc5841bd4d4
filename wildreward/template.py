"""The reward model's input text: one template shared by extraction, training, serving and online DPO.

It is the WildReward template (paper §2.2) so that RMs trained here and the released WildReward checkpoints
read the same input. The scale text says 1-5 although the head predicts 4 levels: that is how the paper's
models were trained, so we keep it. The user's feedback turn is never part of the input.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

NO_HISTORY = "No previous context."

TEMPLATE_HEADER = """# Task Description
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
"""  # noqa: E501 (the paper's template, verbatim)

TEMPLATE_FOOTER = """

# Output
Based on the criteria above, please output ONLY the integer score (1, 2, 3, 4, or 5)."""


def format_history(history: Iterable[Mapping[str, str]] | None) -> str:
    """``[{role, content}, ...]`` -> one ``"role: content\\n"`` line per message (so the block ends with a newline,
    as in the original's ``build_text``); empty history -> the paper's placeholder, without a newline."""
    lines = "".join(f"{m['role']}: {m['content']}\n" for m in (history or []))
    return lines or NO_HISTORY


def build_rm_text(history: Iterable[Mapping[str, str]] | None, query: str, response: str) -> str:
    """Render one (history, query, response) into the RM input text, character for character the original's."""
    return (TEMPLATE_HEADER + format_history(history) + "\n\n## User Query\n" + query
            + "\n\n## Assistant Response\n" + response + TEMPLATE_FOOTER).strip()


# The feedback classifier's input (``model.input: feedback``): the user's next message first, so the tokenizer's
# right truncation never loses it, then the end of the response it reacts to and the start of the query.
FEEDBACK_CHARS = {"feedback": 600, "response": 400, "query": 300}


def build_feedback_text(query: str, response: str, feedback: str) -> str:
    """Render a turn for the feedback classifier; long fields are cut to ``FEEDBACK_CHARS`` characters."""
    feedback, response, query = feedback.strip(), response.strip(), query.strip()
    if len(feedback) > FEEDBACK_CHARS["feedback"]:
        half = FEEDBACK_CHARS["feedback"] // 2
        feedback = feedback[:half] + CUT_MARK + feedback[-half:]
    if len(response) > FEEDBACK_CHARS["response"]:
        response = "[...] " + response[-FEEDBACK_CHARS["response"]:]
    if len(query) > FEEDBACK_CHARS["query"]:
        query = query[:FEEDBACK_CHARS["query"]] + " [...]"
    return f"User's next message: {feedback}\nEnd of the assistant's response: {response}\nUser's query: {query}"


CUT_MARK = " [...] "


def _cut(tokenizer, text: str, budget: int, mode: str) -> str:
    """Keep ``budget`` tokens of ``text``: its head (``right``) or head and tail around a mark (``middle``).
    Cuts at token boundaries but returns a slice of the original string (no decode artefacts)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                        verbose=False)["offset_mapping"]
    if len(offsets) <= budget:
        return text
    if budget <= 0:
        return ""
    if mode == "right":
        return text[: offsets[budget - 1][1]]
    head, tail = (budget + 1) // 2, budget // 2
    tail_text = text[offsets[len(offsets) - tail][0]:] if tail else ""
    return text[: offsets[head - 1][1]] + CUT_MARK + tail_text


def fit_rm_input(tokenizer, history: list[Mapping[str, str]] | None, query: str, response: str, max_length: int,
                 mode: str = "middle", min_response_share: float = 0.5) -> tuple[str, dict[str, bool]]:
    """The RM text for one example, shortened to at most ``max_length`` tokens (special tokens included).

    Order of cuts: oldest history messages first, then the query and response themselves (``right``: keep
    their beginning; ``middle``: keep beginning and end around ``[...]``). The response keeps at least
    ``min_response_share`` of the space left for query + response, so it is never dropped. Returns the text
    and flags saying what was cut (logged as truncation rates)."""
    flags = {"truncated": False, "history_cut": False, "query_cut": False, "response_cut": False}

    def length(h, q, r) -> int:
        return len(tokenizer(build_rm_text(h, q, r), verbose=False)["input_ids"])

    history = list(history or [])
    n = length(history, query, response)
    if n <= max_length:
        return build_rm_text(history, query, response), flags
    flags["truncated"] = True
    if history:
        # Drop the fewest oldest messages that make it fit (all of them if none do). The length shrinks as
        # messages go, so a bisection finds that number with log(n) tokenizations instead of one per message.
        low, high = 1, len(history)
        while low < high:
            mid = (low + high) // 2
            if length(history[mid:], query, response) <= max_length:
                high = mid
            else:
                low = mid + 1
        history = history[low:]
        flags["history_cut"] = True
        n = length(history, query, response)
    if n <= max_length:
        return build_rm_text(history, query, response), flags
    q_len = len(tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])
    r_len = len(tokenizer(response, add_special_tokens=False, verbose=False)["input_ids"])
    overhead = n - q_len - r_len
    available = max_length - overhead
    for _ in range(8):  # boundary effects and the cut mark can add a few tokens: shrink until it fits
        if available < 2:
            raise ValueError(f"max_length={max_length} leaves no room for query and response (template and "
                             f"kept history take {overhead} tokens)")
        r_budget = max(available - q_len, min(r_len, math.ceil(available * min_response_share)))
        q_budget = available - r_budget
        q, r = _cut(tokenizer, query, q_budget, mode), _cut(tokenizer, response, r_budget, mode)
        n = length(history, q, r)
        if n <= max_length:
            flags["query_cut"], flags["response_cut"] = q != query, r != response
            return build_rm_text(history, q, r), flags
        available -= n - max_length
    raise ValueError(f"could not fit an example into max_length={max_length}")
