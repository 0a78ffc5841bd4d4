"""bench_eval_scorers: one evaluation report with every scorer kind next to the baselines (issue 21).

    python benchmarks/bench_eval_scorers.py --rm outputs/default/train/model [--max-pairs 100]

No reward model from the hub is reachable here, so the other kinds are made from the RM given (a `wildreward
train` model with the ``independent`` head, whose backbone is a 3-label classifier):

- ``rm``: the model itself (kind ``wildreward``: its own template fitting and readout);
- ``release``: the same weights without ``wildreward.json`` (detected as ``wildreward_release``: 3 logits on the
  original template, right truncation, R = 1 + sum of sigmoids). Its scores should equal ``rm``'s wherever the
  text fits the model's length, which checks the release path;
- ``scalar``: the same backbone with a 1-label head whose weight and bias are the sums of the three (detected as
  ``hf_scalar``), on a plain chat template given to its tokenizer: a different model, the stand-in for a
  Skywork-style scalar RM;
- ``served``: ``rm`` behind `wildreward serve`, scored over HTTP with OpenRLHF's ``/get_reward``.

Writes benchmarks/results/bench_eval_scorers.{json,md} and the full report under
benchmarks/results/bench_eval_scorers/.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, write_results  # noqa: E402

SERVE_PORT = 8431
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")


def release_copy(model_dir: Path, out: Path) -> Path:
    """The RM's files without wildreward.json: what a released 3-logit WildReward checkpoint looks like."""
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("wildreward.json"))
    return out


def scalar_copy(model_dir: Path, out: Path) -> Path:
    """A 1-label classifier on the RM's backbone: head weight and bias = the sums of the 3 logits' ones."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    three = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
    config = three.config
    config.num_labels, config.id2label, config.label2id = 1, {0: "reward"}, {"reward": 0}
    config.problem_type = "regression"
    one = AutoModelForSequenceClassification.from_config(config)
    state = three.state_dict()
    head = [k for k in state if k.startswith("classifier.") or k.startswith("score.")]
    for key in head:
        state[key] = state[key].sum(dim=0, keepdim=True)
    one.load_state_dict(state)
    one.save_pretrained(out, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)
    with torch.inference_mode():  # sanity: the copy's head is really the summed one
        probe = tok("check", return_tensors="pt")
        assert torch.allclose(one(**probe).logits[0, 0], three(**probe).logits[0].sum(), atol=1e-4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rm", required=True, help="a `wildreward train` model dir (independent head)")
    ap.add_argument("--max-pairs", type=int, default=100)
    ap.add_argument("--data-dir", default="../shared/data")
    args = ap.parse_args()
    from wildreward import ray_compat as rc
    from wildreward.eval.config import EvalConfig, ScorerSpec
    from wildreward.eval.pipeline import run_eval
    from wildreward.eval.report import summary_table
    from wildreward.serve.app import build_app
    from wildreward.serve.config import ServeConfig

    model_dir = Path(args.rm).resolve()
    if json.loads((model_dir / "wildreward.json").read_text())["head"] != "independent":
        raise SystemExit("--rm needs the independent head (3 logits), the training default")
    work = Path(tempfile.mkdtemp(prefix="bench_eval_scorers_"))
    out = RESULTS / "bench_eval_scorers"
    shutil.rmtree(out, ignore_errors=True)
    rc.init_ray(num_cpus=2)
    rc.serve_run(build_app(ServeConfig(model_dir=str(model_dir), port=SERVE_PORT)), name="bench-rm",
                 host="127.0.0.1", port=SERVE_PORT)
    try:
        cfg = EvalConfig(output_dir=str(out), model_dir=str(model_dir), data_dir=str(Path(args.data_dir).resolve()),
                         max_pairs=args.max_pairs, num_actors=1, scorers=[
                             ScorerSpec(name="release", path=str(release_copy(model_dir, work / "release"))),
                             ScorerSpec(name="scalar", path=str(scalar_copy(model_dir, work / "scalar"))),
                             ScorerSpec(name="served", url=f"http://127.0.0.1:{SERVE_PORT}/get_reward")])
        report = run_eval(cfg)
    finally:
        rc.serve_shutdown()
        shutil.rmtree(work, ignore_errors=True)
    results = {"summary": summary_table(report), "agreement": agreement(out)}
    write_results("bench_eval_scorers", results, markdown(results, out))


def agreement(out: Path) -> dict:
    """How far each derived scorer's pair scores are from rm's (release and served should match it)."""
    import pyarrow.parquet as pq

    table = pq.read_table(out / "pair_scores.parquet").to_pydict()
    rm = np.array(table["rm_chosen"] + table["rm_rejected"], dtype=float)
    result = {}
    for name in ("release", "served", "scalar"):
        other = np.array(table[f"{name}_chosen"] + table[f"{name}_rejected"], dtype=float)
        ok = np.isfinite(rm) & np.isfinite(other)
        diff = np.abs(rm[ok] - other[ok])
        result[name] = {"scored": int(ok.sum()), "max_abs_diff": float(diff.max()) if ok.any() else None,
                        "share_within_1e-4": float((diff <= 1e-4).mean()) if ok.any() else None}
    return result


def markdown(results: dict, out: Path) -> str:
    summary = (out / "report.md").read_text().split("## Summary", 1)[1].split("\n## ", 1)[0].strip()
    lines = ["Scorer kinds on one run (see the script's docstring for how each was made from the RM).", "",
             summary, "", "Pair scores against rm's:", "",
             "| scorer | replies scored | max abs diff | share within 1e-4 |", "|---|---|---|---|"]
    for name, r in results["agreement"].items():
        lines.append(f"| {name} | {r['scored']} | {r['max_abs_diff']} | {r['share_within_1e-4']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
