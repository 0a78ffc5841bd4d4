import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wildreward.extract.report import gold_agreement, reconcile


def stats(**over):
    base = {"read": {"records": 10, "conversations": 8, "quarantined": {"invalid_json": 2}},
            "turns": {"turns": 20, "kept": 15, "dropped": {"language": 5}},
            "annotate": {"annotated": 15}, "final": {"kept": 9, "dropped": {"neutral": 6}},
            "split": {"train": {"rows": 7}, "test": {"rows": 2}}}
    for key, value in over.items():
        base[key] = {**base[key], **value}
    return base


def test_reconcile_accepts_consistent_counts_and_names_the_broken_one():
    assert all(reconcile(stats()).values())
    with pytest.raises(RuntimeError, match="turns = kept"):
        reconcile(stats(turns={"dropped": {"language": 4}}))
    with pytest.raises(RuntimeError, match="final kept = train"):
        reconcile(stats(split={"test": {"rows": 1}}))


def test_gold_agreement_accuracy_kappa_and_missing(tmp_path):
    ann = tmp_path / "annotate"
    ann.mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c", "d", "e"], "label": [5, 1, 3, 3, None]}), ann / "part.parquet")
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "label": 5}, {"id": "b", "label": 1}, {"id": "c", "label": 1}, {"id": "d", "label": 3},
        {"id": "e", "label": 2}, {"id": "zz", "label": 4}]) + "\n")
    out = gold_agreement(str(gold), ann)
    assert (out["gold"], out["matched"], out["missing_or_error"]) == (6, 4, 2)
    assert out["accuracy"] == 0.75
    # p_o = 3/4; p_e = (2*1 + 1*1 + 1*2) / 16 = 5/16 over labels (1, 3, 5) -> kappa = (12/16 - 5/16) / (11/16)
    assert out["cohen_kappa"] == pytest.approx(7 / 11, abs=1e-4)
    assert out["confusion_gold_rows_pred_cols"][0] == [1, 0, 1, 0, 0]  # gold 1: predicted 1 once, 3 once
