"""The benchmark plumbing that carries real turns to the GPU machine (gpu_check.sh --prepare)."""
import pytest

from benchmarks.common import kept_turns, save_turns
from tests.conftest import CHATLOGS


def test_saved_turns_read_back_as_the_same_turns(tmp_path):
    turns = kept_turns(str(CHATLOGS / "wildchat_sample.jsonl"), 30)
    assert len(turns) == 30 and any(t["history"] for t in turns)  # multi-turn history included
    path = str(tmp_path / "sample.turns.jsonl.gz")
    save_turns(path, turns)
    back = kept_turns(path, 1000)
    fields = ("id", "conversation_id", "turn_index", "history", "query", "response", "feedback")
    assert back == [{k: t[k] for k in fields} for t in turns]
    assert kept_turns(path, 7) == back[:7]

    save_turns(path, turns, ("id", "feedback"))
    assert kept_turns(path, 1000) == [{"id": t["id"], "feedback": t["feedback"]} for t in turns]


def test_turns_file_needs_its_suffix(tmp_path):
    with pytest.raises(ValueError, match="turns.jsonl.gz"):
        save_turns(str(tmp_path / "sample.jsonl.gz"), [])
