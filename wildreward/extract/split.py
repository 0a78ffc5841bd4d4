"""Train/test split by whole conversations (paper §1.7: a random 5,000-row test set).

Turns of one conversation share history, so splitting by turn would leak test prompts into training. The order
comes from a keyed BLAKE2b hash of (seed, conversation id): the same on every machine, process and Python run
(Python's own ``hash()`` is salted per process), and independent of the order rows arrive in.
"""
from __future__ import annotations

import hashlib


def rank_conversation(conversation_id: str, seed: int) -> bytes:
    """A stable pseudo-random sort key for one conversation under ``seed``."""
    return hashlib.blake2b(conversation_id.encode("utf-8"), digest_size=16, key=str(seed).encode("utf-8")).digest()


def assign_test_conversations(conversation_rows: dict[str, int], test_size: int, seed: int) -> set[str]:
    """Ids of the test conversations, given each conversation's row count.

    Conversations are taken in hash order until the test rows reach ``test_size``, so the test set holds at least
    ``test_size`` rows (or every row, when there are fewer) and overshoots by less than the last conversation taken.
    """
    order = sorted(conversation_rows, key=lambda cid: (rank_conversation(cid, seed), cid))
    chosen: set[str] = set()
    rows = 0
    for conversation_id in order:
        if rows >= test_size:
            break
        chosen.add(conversation_id)
        rows += conversation_rows[conversation_id]
    return chosen
