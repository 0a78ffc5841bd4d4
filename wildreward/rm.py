"""The ordinal reward model: build it for training, save it in plain HF format, load it and score with it.

The saved directory is a standard ``AutoModelForSequenceClassification`` checkpoint (safetensors) plus
``wildreward.json`` (head, readout, template, score statistics), so tools that do not know this package can load
it:

- ``head: independent`` (the paper): ``num_labels=3``, reward = ``1 + Σ σ(logits)``.
- ``head: coral``: ``num_labels=1``, a scalar score s (the usual scalar-RM convention, already fine for pairwise
  ranking); ``wildreward.json`` holds the cut-points θ and reward = ``1 + Σ σ(s - θ_k)``.

Encoders use their own pooling (BERT: [CLS] pooler); decoders use the last non-pad token, as transformers'
``*ForSequenceClassification`` classes do.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from wildreward.ordinal import expected_rating, level_probs, ordered_cutpoints
from wildreward.storage import fetch_dir
from wildreward.template import TEMPLATE_FOOTER, TEMPLATE_HEADER, build_feedback_text, fit_rm_input

META_FILE = "wildreward.json"
FORMAT_VERSION = 1


class OrdinalRewardModel(nn.Module):
    """A sequence-classification backbone whose forward returns the K-1 ordinal logits.

    For the coral head the cut-points live in this module and are used inside ``forward``: DeepSpeed ZeRO-3
    only gathers partitioned parameters during forward (platform.md §4).
    """

    def __init__(self, backbone: nn.Module, head: str, num_levels: int):
        super().__init__()
        self.backbone, self.head, self.num_levels = backbone, head, num_levels
        if head == "coral":
            # Start with the cut-points spread around 0 so every threshold gets gradient from the first step.
            init = torch.linspace(-1.0, 1.0, num_levels - 1)
            raw = torch.cat([init[:1], torch.log(torch.expm1(torch.diff(init)))]) if num_levels > 2 else init
            self.cutpoints_raw = nn.Parameter(raw)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.backbone(input_ids=input_ids, attention_mask=attention_mask).logits
        if self.head == "coral":
            return logits[:, :1] - ordered_cutpoints(self.cutpoints_raw)
        return logits

    def cutpoints(self) -> list[float] | None:
        return ordered_cutpoints(self.cutpoints_raw.detach().float()).tolist() if self.head == "coral" else None


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"tokenizer of {path} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def build_model(backbone: str, head: str, num_levels: int, *, dropout: bool = False,
                trust_remote_code: bool = False, from_config_only: bool = False) -> tuple[OrdinalRewardModel, Any]:
    """Backbone (local path or alias) -> (OrdinalRewardModel, tokenizer). ``from_config_only`` builds the
    architecture without reading weights (used before loading a checkpoint)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from wildreward.models import resolve_model

    path = resolve_model(backbone)
    tok = load_tokenizer(path, trust_remote_code)
    num_labels = num_levels - 1 if head == "independent" else 1
    config = AutoConfig.from_pretrained(path, num_labels=num_labels, trust_remote_code=trust_remote_code)
    config.pad_token_id = tok.pad_token_id
    config.problem_type = "multi_label_classification" if head == "independent" else "regression"
    if not dropout:
        # Reward-model training usually disables dropout (TRL does by default): it makes the pointwise scores
        # noisy and training steps non-reproducible.
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "dropout",
                    "classifier_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if isinstance(getattr(config, key, None), float):
                setattr(config, key, 0.0)
    if from_config_only:
        net = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    else:
        net = AutoModelForSequenceClassification.from_pretrained(path, config=config, use_safetensors=True,
                                                                 trust_remote_code=trust_remote_code)
    return OrdinalRewardModel(net, head, num_levels), tok


def save_reward_model(model: OrdinalRewardModel, tokenizer, out_dir: str | Path, *, max_length: int,
                      truncation: str, score_stats: Mapping[str, Any] | None = None,
                      extra: Mapping[str, Any] | None = None) -> Path:
    """Write the HF checkpoint (safetensors) + tokenizer + ``wildreward.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if model.head == "independent":
        readout = "reward = 1 + sum_k sigmoid(logits[k])"
    else:
        readout = "reward = 1 + sum_k sigmoid(logits[0] - cutpoints[k])"
    meta = {"format_version": FORMAT_VERSION, "head": model.head, "num_levels": model.num_levels,
            "cutpoints": model.cutpoints(), "readout": readout, "reward_range": [1, model.num_levels],
            "max_length": max_length, "truncation": truncation, "template_header": TEMPLATE_HEADER,
            "template_footer": TEMPLATE_FOOTER, "score_stats": dict(score_stats or {}), **dict(extra or {})}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def token_budget_chunks(lengths: Sequence[int], max_tokens: float) -> list[list[int]]:
    """Indices sorted by length (shortest first) and cut into chunks whose padded size (rows x longest) is at most
    ``max_tokens``; an item longer than the budget gets a chunk of its own. Long and short texts then do not pad
    each other, and a chunk of long ones stays small enough to keep its activations in cache. With ``math.inf``
    all indices come back as one chunk, in length order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * lengths[order[end]] <= max_tokens:
            end += 1
        chunks.append(order[start:end])
        start = end
    return chunks


class RewardModel:
    """A saved reward model, ready to score (history, query, response) examples."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import AutoModelForSequenceClassification

        path = fetch_dir(path)  # a URI (s3://...) is copied to this node's cache first
        meta_file = path / META_FILE
        if not meta_file.exists():
            raise FileNotFoundError(f"{path} is not a wildreward reward model (no {META_FILE})")
        self.meta = json.loads(meta_file.read_text(encoding="utf-8"))
        self.tokenizer = load_tokenizer(str(path))
        net = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype, use_safetensors=True)
        self.model = OrdinalRewardModel(net.eval().to(device), self.meta["head"], self.meta["num_levels"])
        if self.meta["head"] == "coral":
            cut = torch.tensor(self.meta["cutpoints"], dtype=torch.float32)
            self.cutpoints = cut.to(device)
        self.device = device

    def logits_for_texts(self, texts: Sequence[str], max_batch_tokens: int = 16384) -> torch.Tensor:
        """Logits [N, 3] (coral: score minus cut-points) for ready RM texts. Texts are sorted by length and run in
        chunks of at most ``max_batch_tokens`` padded tokens, so long and short texts do not pad each other."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.meta["max_length"],
                             verbose=False)["input_ids"]
        out = torch.empty((len(ids), self.meta["num_levels"] - 1))
        for chunk in token_budget_chunks([len(x) for x in ids], max_batch_tokens):
            enc = self.tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = self.model.backbone(**enc).logits.float()
            if self.meta["head"] == "coral":
                logits = logits[:, :1] - self.cutpoints
            out[chunk] = logits.cpu()
        return out

    def texts(self, examples: Sequence[Mapping[str, Any]], tokenizer=None) -> list[str]:
        """(history, query, response) dicts -> RM texts, fitted to the model's length as in training. A copy of
        the tokenizer can be given, for a thread of its own (the server templates while it scores). A feedback
        classifier's texts also need ``feedback``; the tokenizer cuts them to length."""
        if self.meta.get("input") == "feedback":
            return [build_feedback_text(ex["query"], ex["response"], ex["feedback"]) for ex in examples]
        return [fit_rm_input(tokenizer or self.tokenizer, ex.get("history"), ex["query"], ex["response"],
                             self.meta["max_length"], self.meta["truncation"])[0] for ex in examples]

    def score(self, examples: Sequence[Mapping[str, Any]]) -> list[float]:
        return expected_rating(self.logits_for_texts(self.texts(examples))).tolist()

    def level_probs(self, examples: Sequence[Mapping[str, Any]], batch_size: int = 64) -> list[list[float]]:
        """Probability of each level 1..K per example (differences of the cumulative probabilities)."""
        out = []
        for start in range(0, len(examples), batch_size):
            out += level_probs(self.logits_for_texts(self.texts(examples[start:start + batch_size]))).tolist()
        return out
