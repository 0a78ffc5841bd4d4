"""Reward models of any origin for ``wildreward eval``: what kind a checkpoint is, and how each kind scores.

Kinds (``ScorerSpec.kind``):

- ``wildreward``: a model written by ``wildreward train`` (``wildreward.json``), scored by
  :class:`wildreward.rm.RewardModel` with its own template, truncation and readout.
- ``hf_scalar``: any ``AutoModelForSequenceClassification`` with one label (Skywork-Reward style). The turns are
  rendered with the model's own chat template; reward = the logit.
- ``wildreward_release``: a released WildReward checkpoint, a 3-logit classifier read on the original template.
- ``endpoint``: a running service (``/get_reward`` or ``/v1/score``), scored in :mod:`wildreward.eval.score`.

Weights load from safetensors only and never with remote code; every tokenisation truncates explicitly at a
known length.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from wildreward.eval.config import ScorerSpec
from wildreward.rm import META_FILE, token_budget_chunks
from wildreward.storage import Location, fetch_dir

MAX_BATCH_TOKENS = 16384  # padded tokens per forward
# The original server (deploy_rm/serve_rank.py, original-online-dpo.md §4) tokenizes with max_length=4096, the
# training length (paper.md §2.3), and right truncation.
RELEASE_MAX_LENGTH = 4096
KIND_LABELS = {"hf_scalar": 1, "wildreward_release": 3}
ENDPOINT_PATHS = {"/get_reward": "get_reward", "/v1/score": "score"}


# ---------------------------------------------------------------- what a checkpoint is

def check_model_dir(path: str) -> None:
    """A ``wildreward train`` reward model, not a feedback classifier."""
    meta = Location.parse(path) / META_FILE
    if not meta.exists():
        raise FileNotFoundError(f"{path} is not a wildreward reward model (no {META_FILE}); "
                                "give the model/ folder written by `wildreward train`")
    if json.loads(meta.read_text()).get("input") == "feedback":
        raise ValueError(f"{path} is a feedback classifier ({META_FILE} has input: feedback), not a reward model")


def hf_config(path: str) -> dict:
    """config.json of a plain HF checkpoint whose weights are safetensors; a clear error otherwise."""
    loc = Location.parse(path)
    if not (loc / "config.json").exists():
        found = sorted(p.name for p in loc.glob("*"))[:12] if loc.is_dir() else None
        raise FileNotFoundError(f"{path} is not a reward model checkpoint: "
                                + (f"no {META_FILE} or config.json (found: {found})" if found is not None
                                   else "no such directory"))
    config = json.loads((loc / "config.json").read_text())
    if not (loc / "model.safetensors").exists() and not (loc / "model.safetensors.index.json").exists():
        raise FileNotFoundError(f"{path} has no safetensors weights (model.safetensors or its index); other "
                                "formats are pickles and are not loaded")
    return config


def num_labels(config: Mapping[str, Any]) -> int:
    """As transformers counts them: id2label's size, else num_labels, else its default of 2."""
    if config.get("id2label"):
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def hf_kind(path: str, config: Mapping[str, Any]) -> str:
    archs = config.get("architectures") or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(f"{path}: config.json architectures {archs} are not a sequence classifier, so not a "
                         "reward model")
    n = num_labels(config)
    for kind, labels in KIND_LABELS.items():
        if n == labels:
            return kind
    raise ValueError(f"{path}: config.json has {n} labels ({archs or 'no architectures'}); a scalar reward model "
                     "(hf_scalar) has 1, a released WildReward model (wildreward_release) 3")


def no_template_message(path: str) -> str:
    return (f"{path}: the tokenizer has no chat template, so hf_scalar has no text format to score turns in; "
            "add one to the checkpoint (chat_template.jinja, or chat_template in tokenizer_config.json)")


def has_chat_template(path: str) -> bool:
    """Whether the checkpoint's tokenizer files carry a chat template (in any of transformers' places)."""
    loc = Location.parse(path)
    if (loc / "chat_template.jinja").exists() or (loc / "chat_template.json").exists():
        return True
    config = loc / "tokenizer_config.json"
    return config.exists() and bool(json.loads(config.read_text()).get("chat_template"))


def detect_kind(path: str) -> str:
    """``kind: auto`` for a directory: wildreward.json -> wildreward, else config.json's number of labels."""
    if (Location.parse(path) / META_FILE).exists():
        check_model_dir(path)
        return "wildreward"
    return hf_kind(path, hf_config(path))


def split_endpoint(url: str, protocol: str) -> tuple[str, str]:
    """A URL given with its route (OpenRLHF's ``--reward.remote_url`` and the original's REWARD_MODEL_ENDPOINT
    end in /get_reward) -> (service root, that route's protocol)."""
    bare = url.rstrip("/")
    for route, proto in ENDPOINT_PATHS.items():
        if bare.endswith(route):
            if protocol not in ("auto", proto):
                raise ValueError(f"endpoint {url} ends in {route} but protocol is {protocol}")
            return bare[: -len(route)], proto
    return url, protocol


def resolve_kind(spec: ScorerSpec) -> ScorerSpec:
    """The spec with a concrete kind, after checking its checkpoint (no network, no weights loaded)."""
    if spec.url is not None:
        url, protocol = split_endpoint(spec.url, spec.protocol)
        return spec.model_copy(update={"kind": "endpoint", "url": url, "protocol": protocol})
    kind = detect_kind(spec.path) if spec.kind == "auto" else spec.kind
    if kind == "wildreward":
        check_model_dir(spec.path)
        if spec.max_length is not None:
            raise ValueError(f"scorer {spec.name}: max_length does not apply to a wildreward model (it keeps its "
                             "training max_length)")
    else:
        found = hf_kind(spec.path, hf_config(spec.path))
        if found != kind:
            raise ValueError(f"scorer {spec.name}: {spec.path} has {num_labels(hf_config(spec.path))} labels, "
                             f"kind {kind} needs {KIND_LABELS[kind]}")
        if kind == "hf_scalar" and not has_chat_template(spec.path):
            raise ValueError(no_template_message(spec.path))
    return spec.model_copy(update={"kind": kind})


def describe_source(spec: ScorerSpec) -> str:
    """How a scorer is scored, for the report."""
    if spec.kind == "endpoint":
        return f"served model at {spec.url} (protocol {spec.protocol})"
    how = {"wildreward": "wildreward ordinal RM, reward = expected level",
           "hf_scalar": "hf_scalar: the logit of a 1-label classifier on its own chat template",
           "wildreward_release": "wildreward_release: 1 + Σσ of 3 logits on the original template"}[spec.kind]
    return f"`{spec.path}` ({how}; Ray Data actor pool)"


# ---------------------------------------------------------------- scoring with plain HF checkpoints

class HFRewardModel:
    """A sequence classifier from a plain HF checkpoint; subclasses say how turns become text and logits a
    reward. Texts are cut at ``max_length`` tokens (right truncation), sorted by length and run in chunks of at
    most MAX_BATCH_TOKENS padded tokens."""

    kind = ""
    add_special_tokens = True
    default_max_length: int | None = None

    def __init__(self, path: str, *, max_length: int | None = None, device: str = "cpu", dtype=None):
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        local = fetch_dir(path)
        config = AutoConfig.from_pretrained(local, trust_remote_code=False)
        if config.num_labels != KIND_LABELS[self.kind]:
            raise ValueError(f"{path} has {config.num_labels} labels; {self.kind} needs {KIND_LABELS[self.kind]}")
        self.tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=False)
        self.check_tokenizer(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            local, config=config, dtype=dtype or torch.float32, use_safetensors=True,
            trust_remote_code=False).eval().to(device)
        self.device = device
        self.max_length = self.pick_max_length(path, max_length)
        # Without a pad id transformers pools the last position, which is only right for unpadded rows.
        self.pad_id = self.model.config.get_text_config().pad_token_id

    def pick_max_length(self, path: str, asked: int | None) -> int:
        known = [n for n in (getattr(self.model.config.get_text_config(), "max_position_embeddings", None),
                             self.tokenizer.model_max_length) if isinstance(n, int) and 0 < n < 10**8]
        limit = min(known) if known else None
        if asked is not None:
            if limit is not None and asked > limit:
                raise ValueError(f"{path}: max_length {asked} exceeds the model's limit of {limit} tokens")
            return asked
        if limit is None:
            raise ValueError(f"{path}: neither the config nor the tokenizer gives a maximum length; set max_length")
        return min(limit, self.default_max_length or limit)

    def check_tokenizer(self, path: str) -> None:
        """Raise when the tokenizer cannot render this kind's input."""

    def texts(self, examples: Sequence[Mapping[str, Any]]) -> list[str]:
        raise NotImplementedError

    def readout(self, logits):
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(texts), add_special_tokens=self.add_special_tokens, truncation=True,
                             max_length=self.max_length, verbose=False)["input_ids"]
        if any(not x for x in ids):
            raise ValueError("a text has no tokens")
        return ids

    def score(self, examples: Sequence[Mapping[str, Any]]) -> list[float]:
        import torch

        ids = self.encode(self.texts(examples))
        out = [0.0] * len(ids)
        budget = MAX_BATCH_TOKENS if self.pad_id is not None else 0  # 0: one text per forward
        for chunk in token_budget_chunks([len(x) for x in ids], budget):
            width = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), self.pad_id or 0, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
                mask[row, :len(ids[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for i, reward in zip(chunk, self.readout(logits.float().cpu()).tolist()):
                out[i] = reward
        return out


def turns(ex: Mapping[str, Any]) -> list[dict]:
    """The conversation as chat messages: history, then the query and the response being scored. A chat
    template would render a missing text as "None", so anything but strings is an error here."""
    messages = ([{"role": m["role"], "content": m["content"]} for m in ex.get("history") or []]
                + [{"role": "user", "content": ex["query"]}, {"role": "assistant", "content": ex["response"]}])
    if not all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in messages):
        raise TypeError("every role and text of the conversation must be a string")
    return messages


class ScalarRewardModel(HFRewardModel):
    """``hf_scalar``: one logit, read on the text of the model's own chat template. The template writes the
    special tokens itself, so the tokenizer adds none (as ``apply_chat_template(tokenize=True)`` does)."""

    kind = "hf_scalar"
    add_special_tokens = False

    def check_tokenizer(self, path: str) -> None:
        if not self.tokenizer.chat_template:
            raise ValueError(no_template_message(path))

    def texts(self, examples: Sequence[Mapping[str, Any]]) -> list[str]:
        return [self.tokenizer.apply_chat_template(turns(ex), tokenize=False) for ex in examples]

    def readout(self, logits):
        return logits[:, 0]


class ReleaseRewardModel(HFRewardModel):
    """``wildreward_release``: the original template (``build_rm_text``), tokenized as the original server does
    (special tokens added, right truncation at 4096)."""

    kind = "wildreward_release"
    default_max_length = RELEASE_MAX_LENGTH

    def texts(self, examples: Sequence[Mapping[str, Any]]) -> list[str]:
        from wildreward.template import build_rm_text

        return [build_rm_text(ex.get("history"), ex["query"], ex["response"]) for ex in examples]

    def readout(self, logits):
        from wildreward.ordinal import expected_rating

        # paper.md §2.1 "Reward readout" and original-online-dpo.md §4 (deploy_rm/serve_rank.py): 3 ordinal
        # logits -> 1 + Σ_k σ(f_k), the expected level in [1, 4].
        return expected_rating(logits)


def load_scorer(spec: ScorerSpec, device: str = "cpu", dtype=None):
    """An object with ``score(examples) -> list[float]`` for a resolved model spec."""
    if spec.kind == "wildreward":
        import torch

        from wildreward.rm import RewardModel

        return RewardModel(spec.path, device=device, dtype=dtype or torch.float32)
    cls = {"hf_scalar": ScalarRewardModel, "wildreward_release": ReleaseRewardModel}[spec.kind]
    return cls(spec.path, max_length=spec.max_length, device=device, dtype=dtype)
