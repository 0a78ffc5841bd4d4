"""Training prompts for online DPO: a prompt file, or the first user turns of chat logs.

A prompt is single-turn, as in the paper: one user message, optionally after a system message. Each kept prompt
is ``{id, messages, query, prompt_tokens, source}``: ``messages`` go through the policy's chat template,
``query`` is the raw user text the reward model sees (the original sent the decoded, chat-templated prompt
instead: a train/serve skew), ``id`` is a hash of the whitespace-normalised messages (stable across runs and
file order), ``source`` is ``path:line``.

Rows are dropped in this order, and the counts reconcile:

    read == malformed + empty + duplicates + too_long + kept

``malformed`` counts chat-log records the reader quarantined; a malformed row in a prompt file raises instead
(a curated file with a wrong field name should stop the run, not silently shrink it). ``too_long`` means more
than ``max_prompt_tokens`` tokens as the policy is prompted (chat template and generation header included).
Reading stops once ``n`` prompts are kept.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator

from wildreward.extract.config import ReadConfig
from wildreward.extract.read import (Malformed, expand_paths, file_format, plan_read_tasks, read_json, read_jsonl,
                                     read_parquet, read_spec, read_task, to_messages)

READERS = {"jsonl": read_jsonl, "json": read_json, "parquet": read_parquet}


def prompt_ids(tokenizer, messages: list[dict], *, use_chat_template: bool = True) -> list[int]:
    """The token ids the policy is prompted with: its chat template plus the assistant header, or, for a model
    without one, the user text with the tokenizer's special tokens."""
    if use_chat_template:
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False))
    if len(messages) != 1:
        raise ValueError("without a chat template a prompt is the user message alone (no system message)")
    return tokenizer(messages[0]["content"])["input_ids"]


def _row_messages(value: object, field: str) -> list[dict]:
    """A prompt-file row -> messages: a JSON string, ``{field: str | messages}`` or ``{"messages": [...]}``."""
    if isinstance(value, Malformed):
        raise value
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, dict):
        raise Malformed(f"not_object: got a JSON {type(value).__name__}")
    raw = value[field] if field in value else value.get("messages")
    if raw is None:
        raise Malformed(f"missing_field: no {field!r} or 'messages'")
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    messages = to_messages(raw, "role", "content")
    if [m["role"] for m in messages] not in (["user"], ["system", "user"]):
        raise Malformed("not_single_turn: expected one user message, optionally after a system message")
    return messages


def _file_rows(paths: list[str], field: str) -> Iterator[tuple[list[dict], str]]:
    for path in expand_paths(paths):
        fmt = file_format(path)
        for line, value, _ in READERS[fmt](read_spec(path, fmt, 0, None, 1)):
            try:
                yield _row_messages(value, field), f"{path}:{line}"
            except Malformed as err:
                raise ValueError(f"{path}:{line}: malformed prompt row ({err})") from None


def _chatlog_rows(paths: list[str]) -> Iterator[tuple[list[dict] | None, str]]:
    """First user message of each conversation; None for a quarantined record."""
    cfg = ReadConfig(paths=paths)
    for spec in plan_read_tasks(cfg):
        for conv in read_task(spec, cfg):
            source = f"{conv['source_file']}:{conv['line']}"
            if conv["quarantine_reason"] is not None:
                yield None, source
                continue
            first = next((m for m in conv["messages"] if m["role"] == "user"), None)
            yield [{"role": "user", "content": first["content"] if first else ""}], source


def _select(rows: Iterable[tuple[list[dict] | None, str]], n: int | None, tokenizer, max_prompt_tokens: int,
            use_chat_template: bool) -> tuple[list[dict], dict[str, int]]:
    counts = dict.fromkeys(("read", "malformed", "empty", "duplicates", "too_long", "kept"), 0)
    prompts, seen = [], set()
    for messages, source in rows:
        if n is not None and counts["kept"] >= n:
            break
        counts["read"] += 1
        if messages is None:
            counts["malformed"] += 1
            continue
        query = messages[-1]["content"]
        if not query.strip():
            counts["empty"] += 1
            continue
        key = json.dumps([[m["role"], " ".join(m["content"].split())] for m in messages], ensure_ascii=False)
        if key in seen:
            counts["duplicates"] += 1
            continue
        seen.add(key)
        n_tokens = len(prompt_ids(tokenizer, messages, use_chat_template=use_chat_template))
        if n_tokens > max_prompt_tokens:
            counts["too_long"] += 1
            continue
        counts["kept"] += 1
        prompts.append({"id": "p" + hashlib.sha1(key.encode()).hexdigest()[:16], "messages": messages,
                        "query": query, "prompt_tokens": n_tokens, "source": source})
    return prompts, counts


def load_prompts(paths: list[str], *, max_prompt_tokens: int, tokenizer, field: str = "prompt",
                 n: int | None = None, use_chat_template: bool = True) -> tuple[list[dict], dict[str, int]]:
    """Prompts from JSONL / JSON / Parquet files or directories (see ``_row_messages`` for the row shapes)."""
    return _select(_file_rows(paths, field), n, tokenizer, max_prompt_tokens, use_chat_template)


def prompts_from_chatlogs(paths: list[str], n: int | None, *, max_prompt_tokens: int, tokenizer,
                          use_chat_template: bool = True) -> tuple[list[dict], dict[str, int]]:
    """The first user turn of each conversation in chat logs (any format the extract reader knows)."""
    return _select(_chatlog_rows(paths), n, tokenizer, max_prompt_tokens, use_chat_template)
