"""Arrow schemas of every table the extraction stage writes.

Explicit schemas keep Parquet shards consistent: a batch where a column happens to be all null would otherwise
be typed ``null`` and clash with the other shards.
"""
from __future__ import annotations

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

CONVERSATION = pa.schema([
    ("conversation_id", pa.string()), ("source", pa.string()), ("user_id", pa.string()),
    ("language", pa.string()), ("messages", pa.list_(MESSAGE)), ("source_file", pa.string()),
    ("line", pa.int64()), ("quarantine_reason", pa.string()), ("raw", pa.string()),
])

TURN = pa.schema([
    ("id", pa.string()), ("conversation_id", pa.string()), ("turn_index", pa.int64()), ("source", pa.string()),
    ("user_id", pa.string()), ("language", pa.string()), ("history", pa.list_(MESSAGE)), ("query", pa.string()),
    ("response", pa.string()), ("feedback", pa.string()), ("drop_reason", pa.string()),
])

ANNOTATION_FIELDS = [("label", pa.int64()), ("label_probs", pa.list_(pa.float64())), ("annotation", pa.string()),
                     ("error", pa.string())]
ANNOTATED = pa.schema([f for f in TURN if f.name != "drop_reason"] + ANNOTATION_FIELDS)

VERDICT = pa.schema([("id", pa.string()), ("verdict", pa.int64()), ("judge_output", pa.string()),
                     ("judge_error", pa.string())])

CANDIDATE = pa.schema([
    ("id", pa.string()), ("future_id", pa.string()), ("offset", pa.int64()), ("future_label", pa.int64()),
    ("text", pa.string()), ("future_text", pa.string()),
])

# One row per annotated turn. ``label`` is the ordinal level 1-4 the RM trains on; ``annotator_label`` the
# annotator's raw 1-5 rating; ``raw_label`` the 1-5 rating after mining and refusal validation.
FINAL = pa.schema([f for f in TURN if f.name != "drop_reason"] + [
    ("annotator_label", pa.int64()), ("label_probs", pa.list_(pa.float64())), ("annotation", pa.string()),
    ("error", pa.string()), ("raw_label", pa.int64()), ("label", pa.int64()), ("mined_from", pa.string()),
    ("similarity", pa.float64()), ("refusal_verdict", pa.int64()), ("messages", pa.list_(MESSAGE)),
    ("text", pa.string()), ("drop_reason", pa.string()),
])


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> table with exactly ``schema`` (missing keys become null, extra keys are an error)."""
    names = set(schema.names)
    for row in rows[:1]:
        extra = set(row) - names
        if extra:
            raise KeyError(f"unexpected columns {sorted(extra)} for schema {schema.names}")
    return pa.Table.from_pylist(rows, schema=schema)
