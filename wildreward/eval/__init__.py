"""Stage 3: evaluation of a reward model on preference benchmarks and the paper's analyses (paper §3-4).

- ``benchmarks``  local-file loaders for RM-Bench, LLMBar, XSTest, HH-RLHF harmless, and the hub formats of
                  RewardBench, JudgeBench and PPE, all returning one pair-record schema
- ``metrics``     pure numpy math: pairwise and RM-Bench accuracy, accuracy by margin threshold, Platt scaling,
                  expected calibration error, ROC-AUC
- ``score``       scorers: the RM in a Ray Data actor pool or at a served endpoint, length and random baselines
- ``report``      scores -> metrics per benchmark, calibration, consistency; report.json / report.md / plots
- ``pipeline``    ``run_eval`` (``wildreward eval``), configured by ``config.EvalConfig``

Pair record (plain dict): benchmark str, subset str, pair_id str (unique within a benchmark),
history list[{role, content}] (earlier turns, roles user|assistant), query str (the last user turn),
chosen str, rejected str (the two candidate replies to ``query``). RM-Bench records carry three style variants
instead (see :func:`benchmarks.load_rm_bench`); :func:`benchmarks.flatten_rm_bench` turns them into pair records.
A pointwise reward model scores each (history, query, reply) on its own; a pair is right when R(chosen) > R(rejected).
"""
