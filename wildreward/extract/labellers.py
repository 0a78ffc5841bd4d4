"""Feedback labellers besides the LLM prompt, and the figures that compare any labeller with gold labels.

- ``KeywordLabeller``: phrases in the user's next message (the baseline every learned labeller must beat).
- ``ClassifierLabeller``: the classifier ``wildreward labeller`` trains (a probe or a fine-tuned encoder);
  a row whose most probable group (negative / neutral / positive) is under ``min_confidence`` is unsure.
- ``CascadeLabeller``: the classifier first, its unsure rows to an LLM annotator while ``llm_budget`` calls
  last; an unsure row past the budget stays unlabelled, with the error ``unsure``.

Every labeller is a callable over turn dicts returning ``{label, label_probs, annotation, error}`` per row, like
``FeedbackAnnotator``, so the extraction actors can hold any of them. None invents a label.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

UNSURE = "unsure"
GROUPS = ((0, 1), (2,), (3, 4))  # label indices of negative, neutral, positive


def group_of(label: int) -> int:
    """The paper's five categories in three groups: 0 negative (1-2), 1 neutral (3), 2 positive (4-5)."""
    return next(g for g, members in enumerate(GROUPS) if label - 1 in members)


def group_mass(probs: Sequence[float]) -> list[float]:
    """Five class probabilities -> the probability of each group."""
    return [sum(probs[i] for i in members) for members in GROUPS]


# ---------------------------------------------------------------- keyword baseline

def _any(*patterns: str) -> re.Pattern:
    return re.compile("|".join(patterns), re.IGNORECASE)


# Checked in this order on the start of the next message, where attitude is stated.
KEYWORD_RULES: list[tuple[str, int, re.Pattern]] = [
    ("rejection", 1, _any(r"\b(?:this|that|it)(?:'s| is) (?:wrong|incorrect|not (?:what|right|correct))",
                          r"\byou (?:didn'?t|did not|don'?t) (?:answer|understand|listen)", r"\buseless\b",
                          r"\bnot what i (?:asked|wanted|need|meant)", r"\bthat'?s not it\b", r"\bnonsense\b",
                          r"\bstop (?:it|doing|saying)\b", r"不对|错了|没用")),
    ("correction", 2, _any(r"\byou (?:forgot|missed|made (?:a|an) (?:mistake|error))", r"\bi (?:said|asked for)\b",
                           r"\b(?:doesn'?t|does not|didn'?t|won'?t) (?:work|run|compile)", r"\berror\b",
                           r"\bmistake\b", r"\bincorrect\b", r"\bwrong\b", r"\bstill (?:not|doesn'?t|getting)\b",
                           r"\btry again\b", r"\bactually,? (?:it|the|that)\b", r"应该是|有错")),
    ("satisfaction", 5, _any(r"^\W*(?:thanks?|thank you|thx|ty|perfect|great|awesome|excellent|that works|"
                             r"it works|works now|that'?s (?:all|perfect|great))\b", r"谢谢|感谢|完美")),
    ("engagement", 4, _any(r"^\W*(?:interesting|nice|good|cool|wow|love (?:it|this)|this is (?:great|helpful))\b")),
]
ENGAGEMENT_WORDS = 25  # praise followed by more than this many words is engagement, not plain satisfaction
KEYWORD_CHARS = 300


def keyword_label(feedback: str) -> tuple[int, str]:
    """(label 1-5, rule name) of a next message; 3 and 'none' when no rule fires."""
    head = (feedback or "")[:KEYWORD_CHARS]
    for name, label, pattern in KEYWORD_RULES:
        if pattern.search(head):
            if label == 5 and len(feedback.split()) > ENGAGEMENT_WORDS:
                return 4, "satisfaction+request"
            return label, name
    return 3, "none"


class KeywordLabeller:
    def __call__(self, rows: list[dict]) -> list[dict]:
        out = []
        for row in rows:
            label, rule = keyword_label(row["feedback"])
            out.append({"label": label, "label_probs": None, "annotation": f"keyword:{rule}", "error": None})
        return out


# ---------------------------------------------------------------- classifier and cascade

def confident_label(probs: Sequence[float], min_confidence: float,
                    thresholds: dict[str, float] | None = None) -> int | None:
    """The label (1-5) of five class probabilities: first the group (negative / neutral / positive), then the most
    probable label in it; None (unsure) when the most probable group's probability is under ``min_confidence``.

    Without ``thresholds`` the group is the most probable one. With them (``{"negative": t, "positive": t}``,
    tuned on held-out dev predictions by ``tune_thresholds``) a turn is negative when P(negative) reaches its
    threshold, else positive when P(positive) reaches its, else neutral: a rare group's probability seldom wins
    an argmax against the 86% neutral class even when it ranks turns well."""
    mass = group_mass(probs)
    if max(mass) < min_confidence:
        return None
    if thresholds is None:
        best = int(np.argmax(mass))
    else:
        best = 0 if mass[0] >= thresholds["negative"] else 2 if mass[2] >= thresholds["positive"] else 1
    return max(GROUPS[best], key=lambda i: probs[i]) + 1


def best_threshold(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising the F1 of ``scores >= threshold`` against ``positive``; one sort, so it stays
    cheap for the tens of thousands of rows a distilled labeller is tuned on. Ties go to the lowest threshold."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.cumsum(positive[order])
    last = np.r_[ranked[1:] != ranked[:-1], True]  # predicting every row down to this one = scores >= ranked[i]
    thresholds, tp = ranked[last], hits[last]
    f1s = 2 * tp / (np.flatnonzero(last) + 1 + positive.sum())
    if not len(f1s) or f1s.max() <= 0:
        return 1.0, 0.0
    best = len(f1s) - 1 - int(np.argmax(f1s[::-1]))  # thresholds descend: the last maximum is the lowest
    return float(thresholds[best]), float(f1s[best])


def tune_thresholds(probs: Sequence[Sequence[float]], labels: Sequence[int]) -> dict:
    """Group thresholds from out-of-fold class probabilities on labelled dev rows (never test)."""
    grouped = group_probs(probs)
    labels = np.asarray(labels)
    t_neg, f1_neg = best_threshold(grouped[:, 0], labels <= 2)
    t_pos, f1_pos = best_threshold(grouped[:, 2], labels >= 4)
    return {"negative": t_neg, "positive": t_pos, "dev_negative_f1": f1_neg, "dev_positive_f1": f1_pos}


class ClassifierLabeller:
    """A feedback classifier made by ``wildreward labeller``: a probe or a fine-tuned model (``labeller.json``
    says which), deciding with the thresholds tuned there."""

    def __init__(self, model_dir: str, min_confidence: float = 0.0, batch_size: int = 64):
        import json

        from wildreward.storage import fetch_dir

        path = fetch_dir(model_dir)  # a URI (s3://...) is copied to this node's cache first
        meta_file = path / "labeller.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"{model_dir} is not a feedback classifier (no labeller.json): make one with "
                                    "`wildreward labeller`")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta["kind"] == "probe":
            from wildreward.extract.mine import SimilarityScorer
            from wildreward.extract.probe import load_probe, probe_features, probe_probs
            from wildreward.models import resolve_model

            encode = SimilarityScorer(resolve_model(meta["encoder"])).encode
            coef, intercept = load_probe(path)
            self.probs = lambda rows: probe_probs(probe_features(encode, rows, meta["feedback_chars"]), coef,
                                                  intercept).tolist()
        else:
            from wildreward.rm import RewardModel

            model = RewardModel(path)
            self.probs = lambda rows: model.level_probs(rows, batch_size=batch_size)
        self.languages = set(meta.get("train_languages") or [])
        self.thresholds = meta.get("decision")
        self.min_confidence = min_confidence

    def __call__(self, rows: list[dict]) -> list[dict]:
        probs = self.probs(rows)
        out = []
        for row, p in zip(rows, probs):
            label = confident_label(p, self.min_confidence, self.thresholds)
            note = "" if not self.languages or row.get("language") in self.languages else " unseen_language"
            confidence = max(group_mass(p))
            out.append({"label": label, "label_probs": list(map(float, p)),
                        "annotation": f"classifier p={confidence:.3f}{note}", "error": None if label else UNSURE})
        return out


class CascadeLabeller:
    """Classifier first; its unsure rows go to ``llm`` while the budget lasts (counted per actor)."""

    def __init__(self, classifier: Callable[[list[dict]], list[dict]], llm: Callable[[list[dict]], list[dict]],
                 llm_budget: int):
        self.classifier, self.llm, self.budget = classifier, llm, llm_budget
        self.llm_calls = 0

    def __call__(self, rows: list[dict]) -> list[dict]:
        out = self.classifier(rows)
        unsure = [i for i, r in enumerate(out) if r["error"] == UNSURE]
        sent = unsure[:max(self.budget - self.llm_calls, 0)]
        if sent:
            self.llm_calls += len(sent)
            for i, result in zip(sent, self.llm([rows[i] for i in sent])):
                out[i] = {**result, "annotation": f"cascade-llm: {result['annotation']}"}
        return out


def llm_config(cfg):
    """The LLM part of an ``AnnotatorConfig``: itself for an LLM backend; for the classifier and keyword
    labellers, the same section on ``classifier.llm_backend`` (the cascade's LLM and the refusal judge)."""
    if cfg.backend in ("classifier", "keyword"):
        return cfg.model_copy(update={"backend": cfg.classifier.llm_backend})
    return cfg


def make_labeller(cfg) -> Callable[[list[dict]], list[dict]]:
    """The feedback labeller an ``AnnotatorConfig`` describes."""
    from wildreward.extract.annotate import FeedbackAnnotator

    if cfg.backend == "keyword":
        return KeywordLabeller()
    if cfg.backend != "classifier":
        return FeedbackAnnotator(cfg)
    c = cfg.classifier
    classifier = ClassifierLabeller(c.model_dir, c.min_confidence, c.batch_size)
    if c.llm_budget == 0 or c.min_confidence == 0:
        return classifier
    return CascadeLabeller(classifier, FeedbackAnnotator(llm_config(cfg)), c.llm_budget)


# ---------------------------------------------------------------- agreement with gold labels

def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = float(np.sum(pred & gold))
    denom = float(np.sum(pred) + np.sum(gold))
    return 2 * tp / denom if denom else float("nan")


def agreement(pred: Sequence[int | None], gold: Sequence[int]) -> dict:
    """Figures of predicted vs gold labels (1-5) over the rows that got a label; unlabelled rows are counted.

    ``accuracy3``: negative / neutral / positive agreement; ``negative_f1``: labels 1-2 against the rest;
    ``positive_f1``: 4-5 against the rest; ``accuracy5``: the exact category."""
    keep = [i for i, p in enumerate(pred) if p is not None]
    p = np.array([pred[i] for i in keep], dtype=int)
    g = np.array([gold[i] for i in keep], dtype=int)
    out = {"n": len(gold), "labelled": len(keep), "unlabelled": len(gold) - len(keep)}
    if not keep:
        return out | {k: float("nan") for k in ("accuracy3", "accuracy5", "negative_f1", "positive_f1")}
    group = np.vectorize(group_of)
    return out | {"accuracy3": float(np.mean(group(p) == group(g))), "accuracy5": float(np.mean(p == g)),
                  "negative_f1": f1(p <= 2, g <= 2), "positive_f1": f1(p >= 4, g >= 4)}


def bootstrap_interval(pred: Sequence[int | None], gold: Sequence[int], key: str, n_boot: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``agreement(...)[key]`` over rows resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(gold)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        value = agreement([pred[i] for i in idx], [gold[i] for i in idx])[key]
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def group_probs(probs: Sequence[Sequence[float]]) -> np.ndarray:
    """Five class probabilities -> (negative, neutral, positive) probabilities, renormalised."""
    p = np.asarray(probs, dtype=float)
    grouped = np.stack([p[:, list(members)].sum(axis=1) for members in GROUPS], axis=1)
    return grouped / grouped.sum(axis=1, keepdims=True)
