"""Extract stage bookkeeping without Ray: the read stage's row tally and duplicate ids, and dropping the rows
an unavailable backend never answered (moved out of test_extract_pipeline.py, which starts Ray)."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wildreward.extract import schema
from wildreward.extract.pipeline import read_stats
from wildreward.extract.udfs import TALLY, write_tally
from wildreward.storage import Location


def test_drop_unavailable_keeps_every_other_row(tmp_path):
    from wildreward.extract.resume import drop_unavailable

    def part(name, errors):
        pq.write_table(pa.table({"id": [f"{name}{i}" for i in range(len(errors))], "error": errors}),
                       tmp_path / f"{name}.parquet")

    part("a", [None, "backend_unavailable: http 503: down (gave up after 1 attempts)", "unparseable: ..."])
    part("b", ["backend_unavailable: timeout: ReadTimeout (gave up after 6 attempts)"])
    part("c", [None])
    assert drop_unavailable(Location.parse(tmp_path), "error") == 2
    left = sorted(i for f in tmp_path.glob("*.parquet") for i in pq.read_table(f)["id"].to_pylist())
    assert left == ["a0", "a2", "c0"] and not (tmp_path / "b.parquet").exists()


def test_read_stats_stop_on_lost_rows_and_duplicate_ids(tmp_path):
    """Checked before any LLM call: the rows written against the read tasks' own counts, and unique ids."""
    stage = Location.parse(tmp_path / "read")
    row = {"source": "generic", "messages": [{"role": "user", "content": "hi"}], "source_file": "a.jsonl"}
    rows = [{**row, "conversation_id": "c1", "line": 1},
            {**row, "conversation_id": None, "line": 2, "quarantine_reason": "invalid_json: x", "source": None}]
    stage.mkdir()
    pq.write_table(schema.to_table(rows, schema.CONVERSATION), str(stage / "part-0.parquet"))
    write_tally(stage / TALLY, {"path": "a.jsonl", "start": 0}, 2)
    assert read_stats(stage) == {"records": 2, "conversations": 1, "quarantined": {"invalid_json": 1},
                                 "sources": {"generic": 1}}

    write_tally(stage / TALLY, {"path": "b.jsonl", "start": 0}, 1)  # a task's row that never reached the disk
    with pytest.raises(RuntimeError, match="read tasks made 3 rows, 2 were written"):
        read_stats(stage)

    write_tally(stage / TALLY, {"path": "b.jsonl", "start": 0}, 2)
    pq.write_table(schema.to_table([{**row, "conversation_id": "c1", "line": 7, "source_file": "b.jsonl"},
                                    {**row, "conversation_id": "c2", "line": 8, "source_file": "b.jsonl"}],
                                   schema.CONVERSATION), str(stage / "part-1.parquet"))
    with pytest.raises(RuntimeError, match="1 conversation ids occur more than once .*a.jsonl:1, c1 at b.jsonl:7"):
        read_stats(stage)
