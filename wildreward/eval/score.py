"""Score (history, query, response) examples with a reward model or a baseline.

A reward model is a :class:`~wildreward.eval.config.ScorerSpec`: a checkpoint of any kind in
:mod:`wildreward.eval.scorers` (run in a Ray Data actor pool), or a service speaking ``/v1/score`` or OpenRLHF's
``/get_reward``. Every scorer returns :class:`Scored`: one score or ``None`` per input example, with the error
that explains a ``None``. A failure is never replaced by a default score; the metrics leave such pairs out and
count them. Identical examples are scored once (a benchmark reply often appears in several pairs, RM-Bench's in
three).
"""
from __future__ import annotations

import json
import math
import re
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from wildreward import ray_compat as rc
from wildreward.eval.config import ScorerSpec
from wildreward.eval.scorers import load_scorer, resolve_kind, split_endpoint
from wildreward.serve.client import RewardClient, RewardServiceError
from wildreward.template import build_rm_text

SCORED_SCHEMA = pa.schema([("idx", pa.int64()), ("score", pa.float64()), ("error", pa.string())])
ENDPOINT_CHUNK = 512  # examples between two progress lines; the client sends them concurrently
# A valid RM input, sent once to check that a service answers /get_reward before the real texts go out.
PROBE_TEXT = build_rm_text([], "Hello", "Hello! How can I help you today?")
NOT_FOUND = re.compile(r"\bhttp 40[45]\b")


class Scored(NamedTuple):
    scores: list[float | None]
    errors: list[str | None]


def describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"[:500]


def as_item(ex: dict) -> dict:
    """The fields a reward model reads (the request item of `wildreward serve`)."""
    return {"history": ex.get("history") or [], "query": ex.get("query"), "response": ex.get("response")}


def example_key(ex: dict) -> str:
    return json.dumps(as_item(ex), ensure_ascii=False)


def deduplicate(examples: Sequence[dict]) -> tuple[list[dict], list[int]]:
    """-> (distinct examples in first-seen order, position of each input example in that list)."""
    first: dict[str, int] = {}
    unique, where = [], []
    for ex in examples:
        key = example_key(ex)
        if key not in first:
            first[key] = len(unique)
            unique.append(ex)
        where.append(first[key])
    return unique, where


def score_examples(examples: Sequence[dict], *, spec: ScorerSpec | None = None, model_dir: str | None = None,
                   endpoint: str | None = None, batch_size: int = 32, num_actors: int = 1, num_cpus: float = 1.0,
                   num_gpus: float = 0.0, dtype: str = "fp32") -> Scored:
    """Reward of each example from a reward model: ``spec``, or our model directory (``model_dir``), or a
    served model (``endpoint``). Checkpoints run in a Ray Data actor pool."""
    if (spec is not None) + (model_dir is not None) + (endpoint is not None) != 1:
        raise ValueError("give exactly one of spec, model_dir and endpoint")
    if spec is None:
        spec = (ScorerSpec(name="rm", url=endpoint) if endpoint is not None else
                ScorerSpec(name="rm", kind="wildreward", path=model_dir))
    spec = resolve_kind(spec)
    unique, where = deduplicate(examples)
    if spec.kind == "endpoint":
        scored = score_with_endpoint(unique, spec.url, batch_size, spec.protocol)
    else:
        scored = score_with_actors(unique, spec, batch_size=batch_size, num_actors=num_actors, num_cpus=num_cpus,
                                   num_gpus=num_gpus, dtype=dtype)
    return Scored([scored.scores[k] for k in where], [scored.errors[k] for k in where])


def resolve_scorers(specs: Sequence[ScorerSpec]) -> list[ScorerSpec]:
    """Concrete kinds, and a concrete protocol for each endpoint: every checkpoint is checked before any
    service is asked, and all of it before data is loaded or Ray starts."""
    resolved = [resolve_kind(s) for s in specs]
    return [resolve_protocol(s) if s.kind == "endpoint" and s.protocol == "auto" else s for s in resolved]


# ---------------------------------------------------------------- actor pool

class RewardScorer:
    """Actor: holds one reward model of any kind; rows are {idx, example (JSON)} so every block has the same
    Arrow schema, whatever the history looks like."""

    def __init__(self, spec: dict, num_gpus: float, dtype: str):
        import torch

        self.rm = load_scorer(ScorerSpec(**spec), device="cuda" if num_gpus > 0 else "cpu",
                              dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [json.loads(e) for e in batch["example"].to_pylist()]
        try:
            results = [(s, None) for s in self.rm.score(rows)]
        except Exception:  # noqa: BLE001 - find the rows that fail and score the others
            results = [self.score_one(row) for row in rows]
        results = [checked(s, e) for s, e in results]
        return pa.table({"idx": batch["idx"], "score": [s for s, _ in results], "error": [e for _, e in results]},
                        schema=SCORED_SCHEMA)

    def score_one(self, row: dict) -> tuple[float | None, str | None]:
        try:
            return self.rm.score([row])[0], None
        except Exception as err:  # noqa: BLE001 - recorded per row and counted in the report
            return None, describe(err)


def checked(score: float | None, error: str | None) -> tuple[float | None, str | None]:
    if score is not None and not math.isfinite(score):
        return None, f"non-finite score {score}"
    return score, error


def score_with_actors(examples: list[dict], spec: ScorerSpec, *, batch_size: int, num_actors: int, num_cpus: float,
                      num_gpus: float, dtype: str) -> Scored:
    if not examples:
        return Scored([], [])
    rc.init_ray()
    items = [{"idx": i, "example": json.dumps(as_item(ex), ensure_ascii=False)} for i, ex in enumerate(examples)]
    ds = rc.from_items(items, num_blocks=math.ceil(len(items) / batch_size))
    ds = rc.map_with_actors(ds, RewardScorer, {"spec": spec.model_dump(), "num_gpus": num_gpus, "dtype": dtype},
                            batch_size=batch_size, min_actors=1, max_actors=num_actors, num_cpus=num_cpus,
                            num_gpus=num_gpus)
    scores: list[float | None] = [None] * len(examples)
    errors: list[str | None] = ["not returned by the scoring pool"] * len(examples)
    for row in ds.take_all():
        scores[row["idx"]], errors[row["idx"]] = row["score"], row["error"]
    return Scored(scores, errors)


# ---------------------------------------------------------------- served model

def resolve_protocol(spec: ScorerSpec) -> ScorerSpec:
    with RewardClient(spec.url) as client:
        return spec.model_copy(update={"protocol": probe_endpoint(client, spec.url, spec.protocol)})


def probe_endpoint(client: RewardClient, url: str, protocol: str) -> str:
    """The protocol a service speaks: ``score`` when GET /v1/info answers (``wildreward serve``), else
    ``get_reward`` if /v1/info does not exist there and /get_reward scores a probe text. Anything else, a
    service down included, is an error here rather than one per example."""
    info_error = None
    if protocol in ("auto", "score"):
        try:
            client.info()
            return "score"
        except Exception as err:  # noqa: BLE001 - any failure here means no service to evaluate
            if protocol == "score" or not NOT_FOUND.search(str(err)):
                raise RewardServiceError(f"reward service at {url} is not reachable: {describe(err)}") from None
            info_error = describe(err)
    try:
        client.get_rewards([PROBE_TEXT])
    except Exception as err:  # noqa: BLE001
        also = f" (and GET /v1/info: {info_error})" if info_error else ""
        raise RewardServiceError(f"reward service at {url} is not reachable at /get_reward: "
                                 f"{describe(err)}{also}") from None
    return "get_reward"


def score_with_endpoint(examples: list[dict], url: str, batch_size: int, protocol: str = "auto") -> Scored:
    """``/v1/score`` gets structured turns; ``/get_reward`` gets texts built here with the WildReward template
    (the original server and OpenRLHF's take ready texts)."""
    url, protocol = split_endpoint(url, protocol)
    scores: list[float | None] = []
    errors: list[str | None] = []
    with RewardClient(url, texts_per_request=batch_size) as client:
        protocol = probe_endpoint(client, url, protocol)
        score_chunk = score_items if protocol == "score" else score_texts
        for start in range(0, len(examples), ENDPOINT_CHUNK):
            for s, e in score_chunk(client, examples[start:start + ENDPOINT_CHUNK]):
                s, e = checked(s, e)
                scores.append(s)
                errors.append(e)
            print(f"[eval] {url} ({protocol}): {len(scores)}/{len(examples)} distinct examples scored "
                  f"({sum(e is not None for e in errors)} failed)", flush=True)
    return Scored(scores, errors)


def score_items(client: RewardClient, chunk: list[dict]) -> list[tuple[float | None, str | None]]:
    try:
        return [(r["reward"], None) for r in client.score([as_item(ex) for ex in chunk])]
    except RewardServiceError:
        # One bad item fails its whole request: retry one by one so only the bad items are lost.
        return [score_one(client, ex) for ex in chunk]


def score_one(client: RewardClient, ex: dict) -> tuple[float | None, str | None]:
    try:
        return client.score([as_item(ex)])[0]["reward"], None
    except RewardServiceError as err:
        return None, describe(err)


def rm_text(ex: dict) -> str:
    ex = well_formed(ex)
    return build_rm_text(ex.get("history"), ex["query"], ex["response"])


def score_texts(client: RewardClient, chunk: list[dict]) -> list[tuple[float | None, str | None]]:
    results: list[tuple[float | None, str | None]] = [(None, None)] * len(chunk)
    texts = {}
    for i, ex in enumerate(chunk):
        try:
            texts[i] = rm_text(ex)
        except Exception as err:  # noqa: BLE001 - an example no template can render fails alone
            results[i] = (None, describe(err))
    try:
        rewards = client.get_rewards(list(texts.values()))
        for i, reward in zip(texts, rewards):
            results[i] = (reward, None)
    except RewardServiceError:
        for i, text in texts.items():  # as in score_items: isolate the texts the service rejects
            results[i] = text_one(client, text)
    return results


def text_one(client: RewardClient, text: str) -> tuple[float | None, str | None]:
    try:
        return client.get_rewards([text])[0], None
    except RewardServiceError as err:
        return None, describe(err)


# ---------------------------------------------------------------- baselines

def well_formed(ex: dict) -> dict:
    """Raise on an example no model can read, so the baselines fail on it just as the models do."""
    if not isinstance(ex.get("query"), str) or not isinstance(ex.get("response"), str):
        raise TypeError("query and response must be strings")
    return ex


def score_each(examples: Sequence[dict], fn: Callable[[dict], float]) -> Scored:
    scores: list[float | None] = []
    errors: list[str | None] = []
    for ex in examples:
        try:
            scores.append(float(fn(well_formed(ex))))
            errors.append(None)
        except Exception as err:  # noqa: BLE001 - recorded per example and counted in the report
            scores.append(None)
            errors.append(describe(err))
    return Scored(scores, errors)


def length_scores(examples: Sequence[dict]) -> Scored:
    """The longer reply wins: score = its length in characters."""
    return score_each(examples, lambda ex: len(ex["response"]))


def random_scores(examples: Sequence[dict], seed: int) -> Scored:
    """Seeded uniform scores, one per distinct example (a repeated reply keeps its score)."""
    unique, _ = deduplicate(examples)
    draws = dict(zip(map(example_key, unique), np.random.default_rng(seed).uniform(size=len(unique))))
    return score_each(examples, lambda ex: draws[example_key(ex)])
