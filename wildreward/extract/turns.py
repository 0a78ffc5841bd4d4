"""Conversation -> (history, query, response, feedback) turns, the unit the annotator labels (paper §1.2)."""
from __future__ import annotations

import py3langid

DETECT_CHARS = 2000  # language is clear long before this; langid time grows with the text
# py3langid also emits a few ISO 639-3 codes; fold the ones that belong to an ISO 639-1 macro-language.
MACRO_LANGUAGES = {"yue": "zh", "wuu": "zh", "ary": "ar", "arz": "ar", "uzs": "uz"}


def extract_turns(conv: dict) -> list[dict]:
    """One turn per (user, assistant) pair that the user answered; the final unanswered pair yields nothing.

    ``turn_index`` k counts (user, assistant) pairs from 0 (system messages do not count), so ids
    ``<conversation_id>_turn<k>`` match the original scripts.
    """
    messages = conv["messages"]
    turns, k = [], 0
    for i in range(len(messages) - 1):
        if messages[i]["role"] != "user" or messages[i + 1]["role"] != "assistant":
            continue
        if i + 2 < len(messages) and messages[i + 2]["role"] == "user":
            query = messages[i]["content"]
            turns.append({
                "id": f"{conv['conversation_id']}_turn{k}", "conversation_id": conv["conversation_id"],
                "turn_index": k, "source": conv["source"], "user_id": conv["user_id"],
                "language": conv["language"] or detect_language(query), "history": messages[:i],
                "query": query, "response": messages[i + 1]["content"], "feedback": messages[i + 2]["content"],
            })
        k += 1
    return turns


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text`` (None for blank text). py3langid loads its model once per process."""
    if not text or not text.strip():
        return None
    code = py3langid.classify(text[:DETECT_CHARS])[0]
    return None if code == "zxx" else MACRO_LANGUAGES.get(code, code)
