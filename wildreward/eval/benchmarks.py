"""Preference benchmarks from local files -> pair records (contract in :mod:`wildreward.eval`).

Every loader returns ``Loaded(records, skipped)``. Malformed input (a missing field, a wrong type, an unknown
label) raises :class:`BenchmarkFormatError` naming the file and row; nothing is dropped silently. Input that is
well-formed but cannot become a pair (an HH transcript that does not parse, a PPE tie, an XSTest partial refusal)
is listed in ``skipped`` as ``{"where": "<file>: row <n>", "reason": <fixed phrase>}``, so every input row is
either used or listed. Row numbers are 1-based record numbers (JSONL lines,
JSON list items, CSV data rows after the header, Parquet rows).

Every benchmark has a default location under ``<shared>/data`` (:func:`default_path`). Only RM-Bench, LLMBar,
XSTest and HH-RLHF are there; RewardBench, JudgeBench and PPE live on the Hugging Face hub only and are read from a
local copy of their files, placed at the default location or given as a path. A missing file raises
FileNotFoundError with the path as ``filename``.
"""
from __future__ import annotations

import csv
import errno
import gzip
import itertools
import json
import re
from pathlib import Path
from typing import Callable, NamedTuple


class BenchmarkFormatError(ValueError):
    """A benchmark file does not have the expected format; the message names the file and row."""


class Loaded(NamedTuple):
    records: list[dict]
    skipped: list[dict]


def pair(benchmark: str, subset: str, pair_id: str, history: list[dict], query: str, chosen: str,
         rejected: str) -> dict:
    return {"benchmark": benchmark, "subset": subset, "pair_id": pair_id, "history": history, "query": query,
            "chosen": chosen, "rejected": rejected}


def skip(where: str, reason: str) -> dict:
    return {"where": where, "reason": reason}


def get(row: dict, name: str, kind: type | tuple[type, ...], where: str):
    """``row[name]``, checked to be present and of ``kind`` (bool never passes as int)."""
    if not isinstance(row, dict):
        raise BenchmarkFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if name not in row or row[name] is None:
        raise BenchmarkFormatError(f"{where}: missing field {name!r}")
    value = row[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = "/".join(k.__name__ for k in kinds)
        raise BenchmarkFormatError(f"{where}: field {name!r} should be {expected}, got {type(value).__name__}")
    return value


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(row number, record) for every record of a .jsonl(.gz) (blank lines are no records but keep the line
    numbering), .json (a list) or .parquet file, in file order."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return list(enumerate(pq.read_table(path).to_pylist(), 1))
    if name.endswith(".json"):
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise BenchmarkFormatError(f"{path.name}: not valid JSON: {err}") from err
        if not isinstance(rows, list):
            raise BenchmarkFormatError(f"{path.name}: expected a JSON list of records, got {type(rows).__name__}")
        return list(enumerate(rows, 1))
    if name.endswith((".jsonl", ".jsonl.gz")):
        rows = []
        with gzip.open(path, "rt", encoding="utf-8") if name.endswith(".gz") else open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((n, json.loads(line)))
                except ValueError as err:
                    raise BenchmarkFormatError(f"{path.name}: row {n}: not valid JSON: {err}") from err
        return rows
    raise BenchmarkFormatError(f"{path.name}: unsupported file type (expected .jsonl, .jsonl.gz, .json, .parquet)")


def absent(path: Path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "benchmark file not found", str(path))


def file_rows(path: str | Path) -> tuple[Path, list[tuple[int, dict]]]:
    path = Path(path)
    if not path.is_file():
        raise absent(path)
    return path, read_rows(path)


def where(path: Path, n: int) -> str:
    return f"{path.name}: row {n}"


def existing(directory: str | Path, name: str) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        raise absent(path)
    return path


# ---------------------------------------------------------------- RM-Bench

RM_BENCH_FILES = ("chat", "code", "safety-refuse", "safety-response")
# RM-Bench reports four domains, Chat, Code, Math and Safety, the last made of the safety-refuse and safety-response
# files (THU-KEG/RM-Bench README; the leaderboard README averages Easy/Normal/Hard over the four domains).
RM_BENCH_DOMAINS = ("chat", "code", "math", "safety")
RM_BENCH_DOMAIN_OF = {"chat": "chat", "code": "code", "safety-refuse": "safety", "safety-response": "safety"}


def load_rm_bench(directory: str | Path) -> Loaded:
    """RM-Bench (chat.json, code.json, safety-refuse.json, safety-response.json; math is not in the data).

    One record per prompt rather than per pair: the metric (:func:`wildreward.eval.metrics.rm_bench_accuracy`)
    needs all 3 x 3 comparisons of a prompt, and a scorer then sees each of the six replies once. The record has
    the pair-record keys, except that ``chosen`` and ``rejected`` are lists of the three style variants (concise,
    detailed plain, detailed markdown); ``subset`` is the file name, ``domain`` the RM-Bench domain it belongs to
    (:data:`RM_BENCH_DOMAIN_OF`), ``source_subset`` the file's own ``subset`` field (e.g. alpacaeval,
    xstest-should-refuse), ``pair_id`` "<file>-<id>" (ids repeat across the files). :func:`flatten_rm_bench`
    gives the nine ordinary pairs.
    """
    records = []
    for domain in RM_BENCH_FILES:
        path = existing(directory, f"{domain}.json")
        for n, row in read_rows(path):
            at = where(path, n)
            variants = {}
            for side in ("chosen", "rejected"):
                value = get(row, side, list, at)
                if len(value) != 3 or not all(isinstance(v, str) for v in value):
                    raise BenchmarkFormatError(f"{at}: field {side!r} should be a list of 3 strings")
                variants[side] = value
            records.append({**pair("rm_bench", domain, f"{domain}-{get(row, 'id', (int, str), at)}", [],
                                   get(row, "prompt", str, at), variants["chosen"], variants["rejected"]),
                            "domain": RM_BENCH_DOMAIN_OF[domain], "source_subset": get(row, "subset", str, at)})
    return Loaded(records, [])


def flatten_rm_bench(records: list[dict]) -> list[dict]:
    """Per-prompt RM-Bench records -> nine pair records each (chosen variant i vs rejected variant j), with
    ``prompt_id`` (the record's pair_id), ``chosen_idx``, ``rejected_idx`` and pair_id "<prompt_id>/<i><j>".
    RM-Bench *normal* pairs are those with chosen_idx == rejected_idx."""
    out = []
    for rec in records:
        for i, j in itertools.product(range(3), range(3)):
            out.append({**rec, "pair_id": f"{rec['pair_id']}/{i}{j}", "chosen": rec["chosen"][i],
                        "rejected": rec["rejected"][j], "prompt_id": rec["pair_id"], "chosen_idx": i,
                        "rejected_idx": j})
    return out


# ---------------------------------------------------------------- LLMBar

LLMBAR_FILES = {"Natural.json": "llmbar-natural", "Adversarial_Neighbor.json": "llmbar-adver-neighbor",
                "Adversarial_GPTInst.json": "llmbar-adver-GPTInst", "Adversarial_GPTOut.json": "llmbar-adver-GPTOut",
                "Adversarial_Manual.json": "llmbar-adver-manual"}  # subset names as in RewardBench's Chat-Hard


def load_llmbar(directory: str | Path) -> Loaded:
    """LLMBar Natural + the four Adversarial sets: ``label`` (1 or 2) names the better of output_1 / output_2.
    pair_id is "<subset>-<row>"."""
    records = []
    for name, subset in LLMBAR_FILES.items():
        path = existing(directory, name)
        for n, row in read_rows(path):
            at = where(path, n)
            label = get(row, "label", int, at)
            if label not in (1, 2):
                raise BenchmarkFormatError(f"{at}: field 'label' should be 1 or 2, got {label}")
            outputs = get(row, "output_1", str, at), get(row, "output_2", str, at)
            records.append(pair("llmbar", subset, f"{subset}-{n}", [], get(row, "input", str, at),
                                outputs[label - 1], outputs[2 - label]))
    return Loaded(records, [])


# ---------------------------------------------------------------- XSTest

XSTEST_LABELS = {"1_full_compliance": "compliance", "2_full_refusal": "refusal", "3_partial_refusal": "partial"}
XSTEST_COLUMNS = ("id", "type", "prompt", "completion", "final_label")


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkFormatError(f"{path.name}: header lacks column(s) {', '.join(missing)}")
        rows = list(reader)
    for n, row in enumerate(rows, 1):
        if None in row or None in row.values():
            raise BenchmarkFormatError(f"{where(path, n)}: number of fields differs from the header")
    return rows


def read_xstest_prompts(path: Path) -> dict[str, dict]:
    """Prompts file rows by "v2-<id>", each checked: unsafe (``type`` starting with "contrast_") iff label unsafe."""
    prompts = {}
    for n, row in enumerate(read_csv(path, ("id", "prompt", "type", "label")), 1):
        unsafe = row["type"].startswith("contrast_")
        if row["label"] != ("unsafe" if unsafe else "safe"):
            raise BenchmarkFormatError(f"{where(path, n)}: label {row['label']!r} contradicts type {row['type']!r}")
        prompts[f"v2-{row['id']}"] = row
    return prompts


def read_xstest_answers(path: Path, prompts: dict[str, dict], answers: dict[str, list], seen_text: dict[str, str],
                        prompts_name: str) -> None:
    """Adds one model's completions to ``answers`` (prompt id -> [(model, label, completion, where)]) and the text
    the models saw to ``seen_text``, checking each row against the prompts file and the other models' files."""
    model = path.stem.removeprefix("xstest_v2_completions_")
    for n, row in enumerate(read_csv(path, XSTEST_COLUMNS), 1):
        at, key = where(path, n), row["id"]
        if key not in prompts:
            raise BenchmarkFormatError(f"{at}: id {key!r} is not in {prompts_name}")
        if row["type"] != prompts[key]["type"]:
            raise BenchmarkFormatError(f"{at}: type {row['type']!r} differs from {prompts_name}")
        if row["final_label"] not in XSTEST_LABELS:
            raise BenchmarkFormatError(f"{at}: unknown final_label {row['final_label']!r}")
        if any(m == model for m, *_ in answers[key]):
            raise BenchmarkFormatError(f"{at}: second completion of {key} in the same file")
        if seen_text.setdefault(key, row["prompt"]) != row["prompt"]:
            raise BenchmarkFormatError(f"{at}: prompt text of {key} differs from another completion file")
        answers[key].append((model, XSTEST_LABELS[row["final_label"]], row["completion"], at))


def xstest_prompt_pairs(key: str, unsafe: bool, answered: list, query: str) -> tuple[list[dict], list[dict]]:
    """Pairs of one prompt (every winner x loser combination) and the skip entries of its unused completions."""
    win, lose = ("refusal", "compliance") if unsafe else ("compliance", "refusal")
    subset = "xstest-should-refuse" if unsafe else "xstest-should-respond"
    winners = [a for a in answered if a[1] == win]
    losers = [a for a in answered if a[1] == lose]
    records = [pair("xstest", subset, f"{key}:{w_model}>{l_model}", [], query, w_text, l_text)
               for (w_model, _, w_text, _), (l_model, _, l_text, _) in itertools.product(winners, losers)]
    skipped = [skip(at, "partial refusal") if label == "partial"
               else skip(at, "no completion with the opposite label for this prompt")
               for _, label, _, at in answered if label == "partial" or not (winners and losers)]
    return records, skipped


def load_xstest_pairs(directory: str | Path) -> Loaded:
    """Safety pairs built from XSTest v2: 450 prompts (xstest_prompts.csv) answered by five models
    (xstest_v2_completions_<model>.csv) with a human ``final_label`` per completion.

    Construction. A prompt whose ``type`` starts with "contrast_" is unsafe (the prompts file's ``label`` must agree).
    For an unsafe prompt every (full refusal, full compliance) combination of its five completions is a pair with the
    refusal chosen (subset "xstest-should-refuse"); for a safe prompt every (full compliance, full refusal)
    combination with the compliance chosen ("xstest-should-respond"). All combinations are kept, so a prompt gives
    0 to 6 pairs. Partial refusals are excluded: whether they should win is ambiguous. The query is the prompt text
    the models answered (the completion files' ``prompt``; for v2-195 it differs from the prompts file, which says
    "someone's" where the models saw "my enemy's"). pair_id is "v2-<id>:<chosen model>><rejected model>".

    Skipped, one entry per completion row not used in any pair: "partial refusal", and "no completion with the
    opposite label for this prompt" (e.g. all five models complied with a safe prompt).
    """
    directory = Path(directory)
    prompts_path = existing(directory, "xstest_prompts.csv")
    prompts = read_xstest_prompts(prompts_path)
    files = sorted(directory.glob("xstest_v2_completions_*.csv"))
    if not files:
        raise absent(directory / "xstest_v2_completions_*.csv")
    answers: dict[str, list] = {key: [] for key in prompts}
    seen_text: dict[str, str] = {}
    for path in files:
        read_xstest_answers(path, prompts, answers, seen_text, prompts_path.name)
    records, skipped = [], []
    for key, answered in answers.items():
        got, left = xstest_prompt_pairs(key, prompts[key]["type"].startswith("contrast_"), answered,
                                        seen_text.get(key, ""))
        records += got
        skipped += left
    return Loaded(records, skipped)


# ---------------------------------------------------------------- HH-RLHF

HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str) -> list[dict]:
    """``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` -> messages [{role, content}] (user/assistant, content stripped).

    Raises ValueError unless the transcript starts with a Human turn, alternates Human/Assistant and ends with an
    Assistant turn. A turn marker not preceded by a blank line stays part of the content (it cannot be told apart
    from quoted text)."""
    parts = HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 5:
        raise ValueError("does not start with a Human turn followed by an Assistant turn")
    messages = [{"role": HH_ROLES[parts[k]], "content": parts[k + 1].strip()} for k in range(1, len(parts), 2)]
    for k, msg in enumerate(messages):
        if msg["role"] != ("user" if k % 2 == 0 else "assistant"):
            raise ValueError("turns do not alternate Human/Assistant")
    if messages[-1]["role"] != "assistant":
        raise ValueError("does not end with an Assistant turn")
    return messages


def load_hh_harmless(path: str | Path) -> Loaded:
    """Anthropic HH-RLHF harmless-base test: ``chosen`` / ``rejected`` are whole transcripts that should differ only
    in the last Assistant turn. history = all turns before the last Human turn, query = the last Human turn,
    chosen/rejected = the last Assistant turn of each (an empty reply, as in a few chosen transcripts, is kept).

    Skipped with a reason: a transcript that :func:`parse_hh_transcript` rejects (in the test split: a reply with
    a stray turn marker inside), or a pair whose transcripts differ before the last Assistant turn."""
    path, rows = file_rows(path)
    records, skipped = [], []
    for n, row in rows:
        at = where(path, n)
        parsed, problems = {}, []
        for side in ("chosen", "rejected"):
            text = get(row, side, str, at)
            try:
                parsed[side] = parse_hh_transcript(text)
            except ValueError as err:
                problems.append(f"{side} transcript {err}")
        if problems:
            skipped.append(skip(at, "; ".join(problems)))
            continue
        chosen, rejected = parsed["chosen"], parsed["rejected"]
        if chosen[:-1] != rejected[:-1]:
            skipped.append(skip(at, "chosen and rejected differ before the last Assistant turn"))
            continue
        records.append(pair("hh_harmless", "harmless-base", f"harmless-base-{n}", chosen[:-2],
                            chosen[-2]["content"], chosen[-1]["content"], rejected[-1]["content"]))
    return Loaded(records, skipped)


# ---------------------------------------------------------------- hub formats (local copies)

def load_rewardbench(path: str | Path) -> Loaded:
    """RewardBench (allenai/reward-bench, e.g. the ``filtered`` split as Parquet or JSON lines): ``prompt``,
    ``chosen``, ``rejected``, ``subset``, ``id``. Single-turn; pair_id is the id."""
    path, rows = file_rows(path)
    records = []
    for n, row in rows:
        at = where(path, n)
        records.append(pair("rewardbench", get(row, "subset", str, at), str(get(row, "id", (int, str), at)), [],
                            get(row, "prompt", str, at), get(row, "chosen", str, at), get(row, "rejected", str, at)))
    return Loaded(records, [])


JUDGEBENCH_LABELS = {"A>B": ("response_A", "response_B"), "B>A": ("response_B", "response_A")}


def load_judgebench(path: str | Path) -> Loaded:
    """JudgeBench (ScalerLab/JudgeBench, one JSON-lines file per response model, GPT-4o's and Claude-3.5-Sonnet's,
    registered as two benchmarks and reported apart): ``pair_id``, ``source``
    (e.g. "mmlu-pro-computer science", used as subset), ``question``, ``response_A``, ``response_B`` and
    ``label`` "A>B" or "B>A" (every pair has one objectively correct reply)."""
    path, rows = file_rows(path)
    records = []
    for n, row in rows:
        at = where(path, n)
        label = get(row, "label", str, at)
        if label not in JUDGEBENCH_LABELS:
            raise BenchmarkFormatError(f"{at}: field 'label' should be 'A>B' or 'B>A', got {label!r}")
        win, lose = JUDGEBENCH_LABELS[label]
        records.append(pair("judgebench", get(row, "source", str, at), get(row, "pair_id", str, at), [],
                            get(row, "question", str, at), get(row, win, str, at), get(row, lose, str, at)))
    return Loaded(records, [])


PPE_WINNERS = {"model_a": ("response_1", "response_2"), "model_b": ("response_2", "response_1")}
PPE_TIES = ("tie", "tie (bothbad)")


def load_ppe(path: str | Path) -> Loaded:
    """PPE human preference (lmarena-ai/PPE-Human-Preference-V1, Chatbot Arena votes): ``question_id``,
    ``prompt``, ``response_1`` (model_a's reply), ``response_2`` (model_b's) and ``winner`` model_a | model_b |
    tie | tie (bothbad). Ties have no chosen reply and are skipped with reason "tie"; pair_id is question_id."""
    path, rows = file_rows(path)
    records, skipped = [], []
    for n, row in rows:
        at = where(path, n)
        winner = get(row, "winner", str, at)
        if winner in PPE_TIES:
            skipped.append(skip(at, "tie"))
            continue
        if winner not in PPE_WINNERS:
            raise BenchmarkFormatError(f"{at}: unknown winner {winner!r}")
        win, lose = PPE_WINNERS[winner]
        records.append(pair("ppe_human", "human-preference", str(get(row, "question_id", (int, str), at)), [],
                            get(row, "prompt", str, at), get(row, win, str, at), get(row, lose, str, at)))
    return Loaded(records, skipped)


# The five correctness sets (lmarena-ai/PPE-<name>-Best-of-K on the hub) and the file stem each is read from.
PPE_CORRECTNESS_SETS = {"mmlu_pro": "lmarena-ai/PPE-MMLU-Pro-Best-of-K", "math": "lmarena-ai/PPE-MATH-Best-of-K",
                        "gpqa": "lmarena-ai/PPE-GPQA-Best-of-K", "ifeval": "lmarena-ai/PPE-IFEval-Best-of-K",
                        "mbpp_plus": "lmarena-ai/PPE-MBPP-Plus-Best-of-K"}
PPE_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json")


def ppe_correctness_files(path: str | Path) -> dict[str, Path | None]:
    """Set name -> its file (None when absent). ``path`` is a folder holding ``<set>.parquet`` (or .jsonl,
    .jsonl.gz, .json) for any of :data:`PPE_CORRECTNESS_SETS`, or one such file (the set named by its stem)."""
    path = Path(path)
    if path.is_file():
        name = path.name.split(".")[0]
        if name not in PPE_CORRECTNESS_SETS:
            raise BenchmarkFormatError(f"{path.name}: not a PPE correctness set (file stem should be one of "
                                       f"{', '.join(PPE_CORRECTNESS_SETS)})")
        return {name: path}
    found = {}
    for name in PPE_CORRECTNESS_SETS:
        files = [path / f"{name}{suffix}" for suffix in PPE_SUFFIXES if (path / f"{name}{suffix}").is_file()]
        if len(files) > 1:
            raise BenchmarkFormatError(f"{path}: two files for PPE correctness set {name}: "
                                       f"{', '.join(f.name for f in files)}")
        found[name] = files[0] if files else None
    return found


def ppe_responses(row: dict, at: str) -> list[str]:
    """response_1 .. response_K (K >= 2, numbered without gaps), all strings."""
    k = 0
    while f"response_{k + 1}" in row:
        k += 1
    if k < 2:
        raise BenchmarkFormatError(f"{at}: expected fields response_1 .. response_K with K >= 2")
    return [get(row, f"response_{i}", str, at) for i in range(1, k + 1)]


def ppe_labels(row: dict, k: int, at: str) -> tuple[list[int], list[tuple[int, int]]]:
    """``scores`` (one correctness label per response, bool or 0/1) and ``sampled_conflict_pairs`` (0-based
    response indices, one correct and one wrong reply each; an absent field gives no pairs)."""
    scores = get(row, "scores", list, at)
    if len(scores) != k or not all(isinstance(v, (bool, int)) and v in (0, 1) for v in scores):
        raise BenchmarkFormatError(f"{at}: field 'scores' should be {k} correctness labels (true/false)")
    correct = [int(v) for v in scores]
    pairs = []
    for item in row.get("sampled_conflict_pairs") or []:
        ok = (isinstance(item, (list, tuple)) and len(item) == 2
              and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < k for i in item))
        if not ok or correct[item[0]] == correct[item[1]]:
            raise BenchmarkFormatError(f"{at}: sampled_conflict_pairs entry {item!r} is not a pair of response "
                                       "indices with one correct and one wrong reply")
        pairs.append((int(item[0]), int(item[1])))
    return correct, pairs


def load_ppe_correctness(path: str | Path) -> Loaded:
    """PPE correctness (Best-of-K) sets: per row ``question_id``, ``model_name``, ``prompt``, ``response_1`` ..
    ``response_K`` (K = 32 in the released files), ``scores`` (whether each response is verifiably correct) and
    ``sampled_conflict_pairs``, as in the dataset cards of lmarena-ai/PPE-MMLU-Pro-Best-of-K and its siblings.

    One record per row: ``subset`` is the set, ``pair_id`` "<set>/<question_id>/<model_name>" (a question is
    answered by several models), ``responses``, ``correct`` (0/1 each) and ``conflict_pairs``. Sets whose file is
    absent are simply not read (:func:`ppe_correctness_files` lists them); no file at all raises FileNotFoundError.
    """
    files = {name: f for name, f in ppe_correctness_files(path).items() if f is not None}
    if not files:
        raise absent(Path(path))
    records = []
    for name, file in files.items():
        for n, row in read_rows(file):
            at = where(file, n)
            responses = ppe_responses(row, at)
            correct, pairs = ppe_labels(row, len(responses), at)
            ident = f"{name}/{get(row, 'question_id', (int, str), at)}/{get(row, 'model_name', str, at)}"
            records.append({"benchmark": "ppe_correctness", "subset": name, "pair_id": ident, "history": [],
                            "query": get(row, "prompt", str, at), "responses": responses, "correct": correct,
                            "conflict_pairs": pairs})
    return Loaded(records, [])


# ---------------------------------------------------------------- registry

LOADERS: dict[str, Callable[[str | Path], Loaded]] = {
    "rm_bench": load_rm_bench, "llmbar": load_llmbar, "xstest": load_xstest_pairs, "hh_harmless": load_hh_harmless,
    "rewardbench": load_rewardbench, "judgebench_gpt4o": load_judgebench, "judgebench_claude": load_judgebench,
    "ppe_human": load_ppe, "ppe_correctness": load_ppe_correctness,
}
# Relative to the shared data directory (``<shared>/data``). The hub benchmarks are not there: these are the places
# a local copy is looked for (JudgeBench under its upstream file names), else they are reported as not evaluated.
DEFAULT_PATHS = {"rm_bench": "benchmarks/rm_bench", "llmbar": "benchmarks/llmbar", "xstest": "benchmarks/xstest",
                 "hh_harmless": "benchmarks/hh_rlhf/harmless-base-test.jsonl.gz",
                 "rewardbench": "benchmarks/rewardbench/filtered.parquet",
                 "judgebench_gpt4o": "benchmarks/judgebench/dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl",
                 "judgebench_claude": "benchmarks/judgebench/"
                                      "dataset=judgebench,response_model=claude-3-5-sonnet-20240620.jsonl",
                 "ppe_human": "benchmarks/ppe/human_preference_v1.parquet",
                 "ppe_correctness": "benchmarks/ppe/correctness"}


def default_path(name: str, data_dir: str | Path) -> Path:
    if name not in DEFAULT_PATHS:
        raise ValueError(f"unknown benchmark {name!r} (known: {', '.join(DEFAULT_PATHS)})")
    return Path(data_dir) / DEFAULT_PATHS[name]


def load_benchmark(name: str, path: str | Path) -> Loaded:
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r} (known: {', '.join(LOADERS)})")
    records, skipped = LOADERS[name](path)
    if name.startswith("judgebench"):  # one loader, two benchmarks: records carry the registered name
        records = [{**r, "benchmark": name} for r in records]
    return Loaded(records, skipped)
