"""The feedback probe: a linear classifier over a frozen sentence embedding of the user's next message.

Features are the encoder's normalised embedding of the next message (cut to ``feedback_chars``) and the
keyword baseline's one-hot label. The model is a multinomial logistic regression over the five categories
(scikit-learn), stored as plain arrays (``probe.npz``, loaded without pickle). With a few hundred gold labels this
beats fine-tuning the encoder (see benchmarks/README.md, bench_labels).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from wildreward.extract.labellers import keyword_label

LEVELS = 5
PROBE_FILE = "probe.npz"


def keyword_features(feedbacks: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(feedbacks), LEVELS))
    for i, text in enumerate(feedbacks):
        out[i, keyword_label(text)[0] - 1] = 1.0
    return out


def probe_features(encode, rows: Sequence[dict], feedback_chars: int) -> np.ndarray:
    """[embedding of the next message | keyword one-hot] per row; ``encode`` maps texts to unit vectors."""
    feedbacks = [r["feedback"] or "" for r in rows]
    return np.hstack([encode([f[:feedback_chars] for f in feedbacks]), keyword_features(feedbacks)])


def fit_probe(features: np.ndarray, labels: Sequence[int], c: float) -> tuple[np.ndarray, np.ndarray]:
    """(coef [5, d], intercept [5]) of a multinomial logistic regression; a level absent from ``labels`` gets a
    -inf intercept (probability 0) rather than being dropped from the output."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    model = LogisticRegression(C=c, max_iter=5000).fit(features, labels)
    coef = np.zeros((LEVELS, features.shape[1]))
    intercept = np.full(LEVELS, -np.inf)
    if len(model.classes_) == 2:  # sklearn keeps one row for two classes: logit of the second
        coef[model.classes_[1] - 1], intercept[model.classes_[1] - 1] = model.coef_[0], model.intercept_[0]
        intercept[model.classes_[0] - 1] = 0.0
    else:
        coef[model.classes_ - 1], intercept[model.classes_ - 1] = model.coef_, model.intercept_
    return coef, intercept


def probe_probs(features: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Softmax over the five levels."""
    logits = features @ coef.T + intercept
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def save_probe(out_dir: Path, coef: np.ndarray, intercept: np.ndarray) -> None:
    np.savez(Path(out_dir) / PROBE_FILE, coef=coef, intercept=intercept)


def load_probe(model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(model_dir) / PROBE_FILE, allow_pickle=False) as data:
        return data["coef"], data["intercept"]
