import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wildreward.eval.config import EvalConfig
from wildreward.eval.pipeline import benchmark_report, load_benchmarks
from wildreward.eval.report import summary_table, write_report
from wildreward.extract.report import gold_agreement, reconcile
from wildreward.storage import Location


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


# ---------------------------------------------------------------- evaluation report: the paper's protocols
# Small benchmark files are written here, scored by a hand-made table (reply text -> score), and the report's
# numbers are checked against values worked out by hand in the comments.

def write_json(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return path


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rm_bench_prompt(pid, prefix, chosen, rejected):
    return {"id": pid, "subset": "x", "prompt": f"{prefix} prompt {pid}",
            "chosen": [f"{prefix}{pid} chosen {i}" for i in range(3)],
            "rejected": [f"{prefix}{pid} rejected {i}" for i in range(3)]}, {
        **{f"{prefix}{pid} chosen {i}": c for i, c in enumerate(chosen)},
        **{f"{prefix}{pid} rejected {i}": r for i, r in enumerate(rejected)}}


def evaluate(tmp_path, benchmarks, paths, score_of, n_boot=300):
    """Load the files through the pipeline, score every reply with ``score_of`` (as the scorer "hand", plus a
    second scorer "flat" giving every reply 0) and build the report as run_eval does."""
    cfg = EvalConfig(benchmarks=benchmarks, paths={k: str(v) for k, v in paths.items()}, data_dir=str(tmp_path),
                     n_bootstrap=n_boot, output_dir=str(tmp_path / "out"))
    benches = load_benchmarks(cfg)
    parts = {name: {"hand": np.array([score_of[ex["response"]] for ex in b["examples"]], dtype=float),
                    "flat": np.zeros(len(b["examples"]))} for name, b in benches.items() if "examples" in b}
    report = {"tie_eps": 0.0, "n_bootstrap": n_boot, "examples": 0, "distinct_examples": 0,
              "scorers": {s: {"source": "hand-made scores", "failed_examples": 0, "errors": {}}
                          for s in ("hand", "flat")},
              "benchmarks": benchmark_report(cfg, benches, parts)}
    return report


def test_rm_bench_is_averaged_over_domains(tmp_path):
    # chat p1: chosen (1, 2, 3) vs rejected (0, 1, 2): M = [[1, .5, 0], [1, 1, .5], [1, 1, 1]] (2 ties)
    #          -> easy 1, normal 1, hard (.5 + 0 + .5) / 3 = 1/3
    # chat p2: chosen 5 vs rejected 0 everywhere -> 1, 1, 1;   code p1: chosen 0 vs rejected 1 -> 0, 0, 0
    # per domain: chat (1, 1, 2/3), code (0, 0, 0); mean over domains: (1/2, 1/2, 1/3)
    # pooled over the three prompts instead: (2/3, 2/3, 4/9)
    rows, scores = {}, {}
    for domain, prompts in {"chat": [(1, (1, 2, 3), (0, 1, 2)), (2, (5, 5, 5), (0, 0, 0))],
                            "code": [(1, (0, 0, 0), (1, 1, 1))]}.items():
        for pid, chosen, rejected in prompts:
            row, sc = rm_bench_prompt(pid, domain, chosen, rejected)
            rows.setdefault(domain, []).append(row)
            scores.update(sc)
    folder = tmp_path / "rmb"
    for name in ("chat", "code", "safety-refuse", "safety-response"):
        write_json(folder / f"{name}.json", rows.get(name, []))
    report = evaluate(tmp_path, ["rm_bench"], {"rm_bench": folder}, scores)
    res = report["benchmarks"]["rm_bench"]["scorers"]["hand"]
    o = res["overall"]
    assert (o["easy"], o["normal"], o["hard"]) == pytest.approx((1 / 2, 1 / 2, 1 / 3))
    assert res["pooled"]["easy"] == pytest.approx(2 / 3) and res["pooled"]["hard"] == pytest.approx(4 / 9)
    assert res["domains"]["chat"]["hard"] == pytest.approx(2 / 3) and res["domains"]["code"]["easy"] == 0
    assert res["domains_absent"] == ["math", "safety"] and o["ties"] == 2
    for key in ("easy", "normal", "hard"):
        assert o[f"{key}_lo"] <= o[key] <= o[f"{key}_hi"]
    # resampling prompts within their domain: code has one prompt scoring 0 everywhere, so the interval of each
    # value is half the chat domain's spread: chat easy is 1 in every resample -> easy is 1/2 in every resample
    assert o["easy_lo"] == o["easy_hi"] == pytest.approx(0.5)
    row = summary_table(report)["hand"]
    assert row["RM-B Hard"]["value"] == pytest.approx(1 / 3) and row["RM-B Hard"]["lo"] is not None
    write_report(report, Location.parse(str(tmp_path / "out")))
    text = (tmp_path / "out" / "report.md").read_text()
    assert "RM-Bench domains absent from the data, so not in the averages: math, safety" in text


def test_rewardbench_weighted_section_score_differs_from_pair_accuracy(tmp_path):
    # alpacaeval-easy (Chat, weight 100): 2/2 right; mt-bench-hard (Chat Hard, 37): 1/2; llmbar-natural
    # (Chat Hard, 100): 1/4. Pair accuracy 4/8 = 0.5. Sections: Chat 1, Chat Hard (37 * .5 + 100 * .25) / 137;
    # Safety and Reasoning have no pair, so the weighted score is the mean of the two present sections.
    plan = [("alpacaeval-easy", [1, 1]), ("mt-bench-hard", [1, 0]), ("llmbar-natural", [1, 0, 0, 0])]
    rows, scores = [], {}
    for subset, rights in plan:
        for k, right in enumerate(rights):
            pid = f"{subset}-{k}"
            rows.append({"id": pid, "subset": subset, "prompt": f"q {pid}", "chosen": f"good {pid}",
                         "rejected": f"bad {pid}"})
            scores[f"good {pid}"], scores[f"bad {pid}"] = (2.0, 1.0) if right else (1.0, 2.0)
    path = write_jsonl(tmp_path / "rb.jsonl", rows)
    report = evaluate(tmp_path, ["rewardbench"], {"rewardbench": path}, scores)
    res = report["benchmarks"]["rewardbench"]["scorers"]["hand"]
    chat_hard = (37 * 0.5 + 100 * 0.25) / 137
    assert res["overall"]["accuracy"] == 0.5
    assert res["weighted"]["sections"] == pytest.approx({"Chat": 1.0, "Chat Hard": chat_hard})
    assert res["weighted"]["value"] == pytest.approx((1 + chat_hard) / 2)
    assert res["weighted"]["sections_absent"] == ["Safety", "Reasoning"] and not res["weighted"]["complete"]
    assert res["weighted"]["lo"] <= res["weighted"]["value"] <= res["weighted"]["hi"]
    cells = summary_table(report)["hand"]
    assert cells["RewardBench"]["value"] == pytest.approx((1 + chat_hard) / 2)
    assert cells["RewardBench"]["complete"] is False and cells["RewardBench (pairs)"]["value"] == 0.5
    # the flat scorer ties every pair: half credit, and every tie is counted
    flat = report["benchmarks"]["rewardbench"]["scorers"]["flat"]["overall"]
    assert (flat["accuracy"], flat["ties"]) == (0.5, 8)


def ppe_row(qid, model, correct, pairs, prefix):
    return {"question_id": qid, "model_name": model, "prompt": f"question {qid}", "scores": correct,
            "sampled_conflict_pairs": pairs, "mean_score": sum(correct) / len(correct),
            **{f"response_{i + 1}": f"{prefix} {qid} {model} reply {i}" for i in range(len(correct))}}


def test_ppe_correctness_best_of_k_by_hand(tmp_path):
    # K = 4. mmlu_pro q1: RM (.1, .9, .5, .2), correct (F, T, F, T): top reply 2 is correct -> 1;
    #   conflict pairs (0, 1): correct 1 wins (.9 > .1) -> 1, (2, 3): wrong 2 wins (.5 > .2) -> 0
    # mmlu_pro q2: RM (.3, .7, .7, .1), correct (T, F, F, F): replies 2 and 3 tie at the top, both wrong -> 0;
    #   pair (1, 0): wrong 1 beats correct 0 -> 0
    # math q1: RM (.5, .5, .5, .4), correct (T, T, F, F): three replies tie at the top, 2 of them correct -> 2/3;
    #   pair (0, 2): .5 vs .5 -> tie, 0.5
    # best of K: mmlu_pro (1 + 0) / 2 = 1/2, math 2/3, mean over sets 7/12 (pooled over prompts it would be 5/9)
    # pair accuracy: mmlu_pro 1/3, math 1/2, mean over sets 5/12
    folder = tmp_path / "ppe"
    mmlu = [ppe_row("q1", "m1", [False, True, False, True], [[0, 1], [2, 3]], "mmlu"),
            ppe_row("q2", "m1", [True, False, False, False], [[1, 0]], "mmlu")]
    maths = [ppe_row("q1", "m1", [True, True, False, False], [[0, 2]], "math")]
    write_jsonl(folder / "mmlu_pro.jsonl", mmlu)
    write_jsonl(folder / "math.jsonl", maths)
    rm = {"mmlu q1": (.1, .9, .5, .2), "mmlu q2": (.3, .7, .7, .1), "math q1": (.5, .5, .5, .4)}
    scores = {f"{key.split()[0]} {key.split()[1]} m1 reply {i}": v for key, vals in rm.items()
              for i, v in enumerate(vals)}
    report = evaluate(tmp_path, ["ppe_correctness"], {"ppe_correctness": folder}, scores)
    b = report["benchmarks"]["ppe_correctness"]
    assert b["sets_absent"] == ["gpqa", "ifeval", "mbpp_plus"] and b["loaded"] == 3
    res = b["scorers"]["hand"]
    assert res["subsets"]["mmlu_pro"]["best_of_k"]["value"] == pytest.approx(0.5)
    assert res["subsets"]["math"]["best_of_k"]["value"] == pytest.approx(2 / 3)
    assert res["overall"]["best_of_k"]["value"] == pytest.approx(7 / 12)
    assert res["overall"]["pair_accuracy"]["value"] == pytest.approx(5 / 12)
    assert (res["overall"]["ties"], res["overall"]["pair_ties"], res["overall"]["k"]) == (2, 1, [4])
    assert summary_table(report)["hand"]["PPE Correctness"]["value"] == pytest.approx(7 / 12)
    write_report(report, Location.parse(str(tmp_path / "out")))
    assert "Sets not evaluated (file absent): gpqa, ifeval, mbpp_plus" in (tmp_path / "out" / "report.md").read_text()


def test_judgebench_splits_apart_and_absent_files_not_evaluated(tmp_path):
    # GPT-4o split: both pairs right -> 1.0; Claude split: one of two -> 0.5. PPE human and RewardBench files
    # do not exist: listed as not evaluated, with no number.
    def jb(model, rights):
        rows = [{"pair_id": f"p{k}", "source": "mmlu-pro-physics", "question": f"q{k}", "label": "A>B",
                 "response_A": f"{model} A{k}", "response_B": f"{model} B{k}"} for k in range(len(rights))]
        return rows, {text: (1.0 if right else 0.0) if side == "A" else 0.5
                      for k, right in enumerate(rights) for side, text in (("A", f"{model} A{k}"),
                                                                          ("B", f"{model} B{k}"))}
    gpt_rows, gpt_scores = jb("gpt", [True, True])
    claude_rows, claude_scores = jb("claude", [True, False])
    paths = {"judgebench_gpt4o": write_jsonl(tmp_path / "jb" / "gpt.jsonl", gpt_rows),
             "judgebench_claude": write_jsonl(tmp_path / "jb" / "claude.jsonl", claude_rows),
             "ppe_human": tmp_path / "missing" / "ppe.parquet"}
    report = evaluate(tmp_path, ["judgebench_gpt4o", "judgebench_claude", "ppe_human", "rewardbench"], paths,
                      {**gpt_scores, **claude_scores})
    row = summary_table(report)["hand"]
    assert row["JudgeBench GPT-4o"]["value"] == 1.0 and row["JudgeBench Claude"]["value"] == 0.5
    assert row["JudgeBench Claude"]["lo"] <= 0.5 <= row["JudgeBench Claude"]["hi"]
    missing = str(tmp_path / "missing" / "ppe.parquet")
    assert report["benchmarks"]["ppe_human"] == {"path": missing,
                                                 "status": f"not evaluated (file absent: {missing})"}
    assert row["PPE Human"] == {"value": None, "lo": None, "hi": None,
                                "note": f"not evaluated (file absent: {missing})"}
    assert row["RewardBench"]["value"] is None  # the default location under data_dir is empty too
    write_report(report, Location.parse(str(tmp_path / "out")))
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"- ppe_human: not evaluated (file absent: {missing})" in text
    assert "| hand | 100.0 [100.0, 100.0] | 50.0 [" in text  # the summary row: JudgeBench GPT-4o, Claude, ...
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["benchmarks"]["ppe_human"]["status"].startswith("not evaluated")
