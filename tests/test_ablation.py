"""The data-strategy ablation on a tiny setup: variants share the annotation stage, each trains and evaluates."""
import json

import pytest

from tests.conftest import SHARED
from wildreward.config import load_config
from wildreward.eval.ablation import AblationConfig, run_ablation

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]


def test_ablation_variants_share_annotation(ray_local, chatlogs, tiny_lm, tiny_bert, tmp_path, capsys):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = (chatlogs / "wildchat_sample.jsonl").read_bytes().splitlines()[:10]
    (logs / "wildchat.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    cfg = load_config(AblationConfig, None, [
        f"output_dir={tmp_path / 'out'}", "variants=[full,neither]", f"extract.read.paths=[{logs}]",
        f"extract.annotator.model={tiny_lm}", "extract.annotator.batch_size=4", "extract.split.test_size=3",
        f"train.model.backbone={tiny_bert}", "train.model.max_length=256", "train.dist.num_workers=1",
        "train.batch.global_batch_size=2", "train.batch.micro_batch_size=1", "train.max_steps=2",
        f"eval.data_dir={SHARED / 'data'}", "eval.benchmarks=[xstest]", "eval.max_pairs=4", "eval.num_actors=1"])
    results = run_ablation(cfg)
    assert list(results) == ["full", "neither"]
    assert results["neither"]["mined"] == 0 and results["neither"]["refusal_relabelled"] == 0
    for r in results.values():
        assert 0 <= r["scores"]["Overall"] <= 1 and r["train_rows"] > 0
    # the second variant reused the first one's annotation: the LLM ran once
    printed = capsys.readouterr().out
    assert printed.count("stage annotate: running") == 1 and printed.count("stage annotate: already done") == 1
    markers = [tmp_path / "out" / v / "extract" / "stages" / "annotate" / "_DONE.json" for v in ("full", "neither")]
    assert json.loads(markers[0].read_text()) == json.loads(markers[1].read_text())
    assert "| neither | no | no |" in (tmp_path / "out" / "ablation.md").read_text()
