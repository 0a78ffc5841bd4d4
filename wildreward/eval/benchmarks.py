"""Preference benchmarks from local files -> pair records (contract in :mod:`wildreward.eval`).

Every loader returns ``Loaded(records, skipped)``. Malformed input (a missing field, a wrong type, an unknown
label) raises :class:`BenchmarkFormatError` naming the file and row; nothing is dropped silently. Input that is
well-formed but cannot become a pair (an HH transcript that does not parse, a PPE tie, an XSTest partial refusal)
is listed in ``skipped`` as ``{"where": "<file>: row <n>", "reason": <fixed phrase>}``, so every input row is
either used or listed. Row numbers are 1-based record numbers (JSONL lines,
JSON list items, CSV data rows after the header, Parquet rows).

The four benchmarks under ``<shared>/data/benchmarks`` have default locations (:func:`default_path`);
RewardBench, JudgeBench and PPE live on the Hugging Face hub only and are read from a local copy of their files.
"""
from __future__ import annotations

import csv
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


def file_rows(path: str | Path) -> tuple[Path, list[tuple[int, dict]]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    return path, read_rows(path)


def where(path: Path, n: int) -> str:
    return f"{path.name}: row {n}"


def existing(directory: str | Path, name: str) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    return path


# ---------------------------------------------------------------- RM-Bench

RM_BENCH_FILES = ("chat", "code", "safety-refuse", "safety-response")


def load_rm_bench(directory: str | Path) -> Loaded:
    """RM-Bench (chat.json, code.json, safety-refuse.json, safety-response.json; math is not in the data).

    One record per prompt rather than per pair: the metric (:func:`wildreward.eval.metrics.rm_bench_accuracy`)
    needs all 3 x 3 comparisons of a prompt, and a scorer then sees each of the six replies once. The record has
    the pair-record keys, except that ``chosen`` and ``rejected`` are lists of the three style variants (concise,
    detailed plain, detailed markdown); ``subset`` is the domain (the file name), ``source_subset`` the file's own
    ``subset`` field (e.g. alpacaeval, xstest-should-refuse), ``pair_id`` "<domain>-<id>" (ids repeat across the
    domain files). :func:`flatten_rm_bench` gives the nine ordinary pairs.
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
                            "source_subset": get(row, "subset", str, at)})
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
    prompts = {}
    for n, row in enumerate(read_csv(prompts_path, ("id", "prompt", "type", "label")), 1):
        unsafe = row["type"].startswith("contrast_")
        if row["label"] != ("unsafe" if unsafe else "safe"):
            raise BenchmarkFormatError(f"{where(prompts_path, n)}: label {row['label']!r} contradicts type "
                                       f"{row['type']!r}")
        prompts[f"v2-{row['id']}"] = row
    files = sorted(directory.glob("xstest_v2_completions_*.csv"))
    if not files:
        raise FileNotFoundError(f"no xstest_v2_completions_*.csv files in {directory}")
    # prompt id -> [(model, label, completion, where)], text the models saw per prompt id
    answers: dict[str, list[tuple[str, str, str, str]]] = {key: [] for key in prompts}
    seen_text: dict[str, str] = {}
    for path in files:
        model = path.stem.removeprefix("xstest_v2_completions_")
        for n, row in enumerate(read_csv(path, XSTEST_COLUMNS), 1):
            at = where(path, n)
            key = row["id"]
            if key not in prompts:
                raise BenchmarkFormatError(f"{at}: id {key!r} is not in {prompts_path.name}")
            if row["type"] != prompts[key]["type"]:
                raise BenchmarkFormatError(f"{at}: type {row['type']!r} differs from {prompts_path.name}")
            if row["final_label"] not in XSTEST_LABELS:
                raise BenchmarkFormatError(f"{at}: unknown final_label {row['final_label']!r}")
            if any(m == model for m, *_ in answers[key]):
                raise BenchmarkFormatError(f"{at}: second completion of {key} in the same file")
            if seen_text.setdefault(key, row["prompt"]) != row["prompt"]:
                raise BenchmarkFormatError(f"{at}: prompt text of {key} differs from another completion file")
            answers[key].append((model, XSTEST_LABELS[row["final_label"]], row["completion"], at))
    records, skipped = [], []
    for key, answered in answers.items():
        unsafe = prompts[key]["type"].startswith("contrast_")
        win, lose = ("refusal", "compliance") if unsafe else ("compliance", "refusal")
        subset = "xstest-should-refuse" if unsafe else "xstest-should-respond"
        winners = [a for a in answered if a[1] == win]
        losers = [a for a in answered if a[1] == lose]
        for (w_model, _, w_text, _), (l_model, _, l_text, _) in itertools.product(winners, losers):
            records.append(pair("xstest", subset, f"{key}:{w_model}>{l_model}", [], seen_text[key], w_text, l_text))
        for model, label, _, at in answered:
            if label == "partial":
                skipped.append(skip(at, "partial refusal"))
            elif not (winners and losers):
                skipped.append(skip(at, "no completion with the opposite label for this prompt"))
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
    """JudgeBench (ScalerLab/JudgeBench, one JSON-lines file per response model): ``pair_id``, ``source``
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


# ---------------------------------------------------------------- registry

LOADERS: dict[str, Callable[[str | Path], Loaded]] = {
    "rm_bench": load_rm_bench, "llmbar": load_llmbar, "xstest": load_xstest_pairs, "hh_harmless": load_hh_harmless,
    "rewardbench": load_rewardbench, "judgebench": load_judgebench, "ppe_human": load_ppe,
}
# Relative to the shared data directory (``<shared>/data``); the hub benchmarks have no local default.
DEFAULT_PATHS = {"rm_bench": "benchmarks/rm_bench", "llmbar": "benchmarks/llmbar", "xstest": "benchmarks/xstest",
                 "hh_harmless": "benchmarks/hh_rlhf/harmless-base-test.jsonl.gz"}


def default_path(name: str, data_dir: str | Path) -> Path:
    if name not in DEFAULT_PATHS:
        raise ValueError(f"benchmark {name!r} has no default location (known: {', '.join(DEFAULT_PATHS)}); "
                         "give its path")
    return Path(data_dir) / DEFAULT_PATHS[name]


def load_benchmark(name: str, path: str | Path) -> Loaded:
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r} (known: {', '.join(LOADERS)})")
    return LOADERS[name](path)
