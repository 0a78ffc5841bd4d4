"""Training data: validation, tokenisation with truncation, length-grouped micro-batches, dynamic padding.

Pure functions on Arrow tables and token lists; the training loop calls them inside the Ray Train workers.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from wildreward.template import build_feedback_text, fit_rm_input

REQUIRED_COLUMNS = ("id", "history", "query", "response", "label")


def columns_for(input_kind: str) -> tuple[str, ...]:
    """The columns training reads: a feedback classifier also needs the next message."""
    return REQUIRED_COLUMNS + ("feedback",) if input_kind == "feedback" else REQUIRED_COLUMNS


def find_bad_rows(table: pa.Table, num_levels: int, columns: tuple[str, ...] = REQUIRED_COLUMNS) -> pa.Table:
    """One row per unusable training row: ``id`` and ``reason`` (missing column, label not a whole number or out
    of 1..K, empty query or response). Training refuses to start when this is not empty: a bad label is not
    silently dropped or rounded."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"training data lacks columns {missing} (has {table.column_names}); "
                         "expected the train/ output of `wildreward extract`")
    label = table["label"]
    if not (pa.types.is_integer(label.type) or pa.types.is_floating(label.type)):
        raise ValueError(f"the label column has type {label.type}; expected integer levels 1..{num_levels}")
    checks = {"label_missing": pc.is_null(label)}
    if pa.types.is_floating(label.type):  # 2.5 or NaN would otherwise become level 2 or a crash later
        checks["label_not_integer"] = pc.or_(pc.is_nan(label), pc.not_equal(pc.floor(label), label))
    checks |= {
        "label_out_of_range": pc.or_(pc.less(label, 1), pc.greater(label, num_levels)),
        "empty_query": pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(table["query"], ""))), 0),
        "empty_response": pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(table["response"], ""))), 0),
    }
    if "feedback" in columns:
        checks["empty_feedback"] = pc.equal(
            pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(table["feedback"], ""))), 0)
    ids, reasons = [], []
    for reason, mask in checks.items():
        bad = table.filter(pc.fill_null(mask, False))
        ids += bad["id"].to_pylist()
        reasons += [reason] * bad.num_rows
    return pa.table({"id": pa.array(ids, pa.string()), "reason": pa.array(reasons, pa.string())})


def encode_rows(rows: list[dict[str, Any]], tokenizer, max_length: int, truncation: str,
                input_kind: str = "rm") -> list[dict[str, Any]]:
    """Rows -> ``{id, input_ids, label, truncated, response_cut}``, each at most ``max_length`` tokens."""
    out = []
    for row in rows:
        if input_kind == "feedback":
            text = build_feedback_text(row["query"], row["response"], row["feedback"])
            ids = tokenizer(text, verbose=False, truncation=True, max_length=max_length)["input_ids"]
            flags = {"truncated": len(ids) == max_length, "response_cut": False}
        else:
            text, flags = fit_rm_input(tokenizer, row["history"], row["query"], row["response"], max_length,
                                       truncation)
            ids = tokenizer(text, verbose=False)["input_ids"]
        out.append({"id": row["id"], "input_ids": ids, "label": int(row["label"]),
                    "truncated": flags["truncated"], "response_cut": flags["response_cut"]})
    return out


def group_by_length(lengths: list[int], micro_batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Indices sorted by length, cut into micro-batches, micro-batch order shuffled: similar lengths share a
    batch (little padding) while the order stays random."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches = [order[i:i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]
    rng.shuffle(batches)
    return batches


def micro_batches_per_epoch(rows: int, window_rows: int, micro_batch_size: int) -> int:
    """How many micro-batches one worker forms from ``rows`` rows read in windows of ``window_rows``."""
    full, rest = divmod(rows, window_rows)
    return full * math.ceil(window_rows / micro_batch_size) + math.ceil(rest / micro_batch_size)


def collate(examples: list[dict[str, Any]], pad_id: int, pad_to_multiple_of: int = 1) -> dict[str, Any]:
    """Right-pad to the longest example of the batch (dynamic padding)."""
    longest = max(len(e["input_ids"]) for e in examples)
    width = math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, :len(e["input_ids"])] = torch.tensor(e["input_ids"])
        mask[i, :len(e["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask,
            "labels": torch.tensor([e["label"] for e in examples], dtype=torch.long),
            "real_tokens": int(mask.sum()), "padded_tokens": int(mask.numel()),
            "truncated": sum(e["truncated"] for e in examples),
            "response_cut": sum(e["response_cut"] for e in examples)}


def padding_efficiency(lengths: list[int], batches: list[list[int]], pad_to: int | None = None) -> float:
    """Real tokens / processed tokens for a batching; ``pad_to`` pads every batch to that width instead."""
    processed = sum(len(b) * (pad_to or max(lengths[i] for i in b)) for b in batches)
    return sum(lengths) / processed if processed else float("nan")
