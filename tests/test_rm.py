"""Ordinal reward model: build, forward, save in HF format, reload and score (tiny random backbones)."""
import json
import math

import pytest
import torch

from tests.conftest import build_tiny_bert
from wildreward.rm import META_FILE, RewardModel, build_model, save_reward_model, token_budget_chunks
from wildreward.template import fit_rm_input

MAX_LENGTH = 256
EXAMPLES = [
    {"history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}],
     "query": "What is the capital of France?", "response": "Paris."},
    {"history": None, "query": "Tell me a joke.", "response": "Why did the chicken cross the road?"},
    {"query": "Write a long essay.", "response": " ".join(f"word{i}" for i in range(400))},  # needs cutting
]


@pytest.fixture(scope="module")
def spread_bert(tmp_path_factory) -> str:
    # Large init: outputs depend visibly on the input (the default gives near-constant scores).
    return build_tiny_bert(tmp_path_factory.mktemp("spread_bert"), hidden_size=32, intermediate_size=64,
                           initializer_range=0.5)


@pytest.fixture(params=["bert", "llama"])
def backbone(request):
    return request.getfixturevalue("spread_bert" if request.param == "bert" else "tiny_lm")


def build(backbone_path: str, head: str):
    torch.manual_seed(1)  # the new classification head is random
    model, tok = build_model(backbone_path, head, 4)
    model.eval()
    if head == "coral":
        with torch.no_grad():  # non-default cut-points, so saving them is really checked
            model.cutpoints_raw.copy_(torch.tensor([-0.3, 0.2, 1.5]))
    return model, tok


def encode(tok, texts):
    return tok(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")


def fitted_texts(tok):
    return [fit_rm_input(tok, ex.get("history"), ex["query"], ex["response"], MAX_LENGTH, "middle")[0]
            for ex in EXAMPLES]


@pytest.mark.parametrize("head", ["independent", "coral"])
def test_forward_shape(backbone, head):
    model, tok = build(backbone, head)
    enc = encode(tok, fitted_texts(tok))
    with torch.no_grad():
        out = model(enc["input_ids"], enc["attention_mask"])
    assert out.shape == (len(EXAMPLES), 3)
    assert torch.isfinite(out).all()
    assert model.backbone.config.num_labels == (3 if head == "independent" else 1)
    assert tok.padding_side == "right" and tok.pad_token_id is not None


def test_coral_logits_are_score_minus_cutpoints(backbone):
    model, tok = build(backbone, "coral")
    enc = encode(tok, fitted_texts(tok))
    with torch.no_grad():
        out = model(enc["input_ids"], enc["attention_mask"])
        score = model.backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    cut = model.cutpoints()
    # softplus gaps: [-0.3, -0.3 + sp(0.2), -0.3 + sp(0.2) + sp(1.5)]
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert cut == pytest.approx([-0.3, -0.3 + sp(0.2), -0.3 + sp(0.2) + sp(1.5)], abs=1e-6)
    assert score.shape == (len(EXAMPLES), 1)
    assert torch.allclose(out, score - torch.tensor(cut), atol=1e-6)
    # column differences are the same for every example: θ_{k+1} - θ_k > 0
    diffs = out[:, :-1] - out[:, 1:]
    assert torch.allclose(diffs, diffs[:1].expand_as(diffs), atol=1e-5)
    assert (diffs > 0).all()


def test_coral_initial_cutpoints():
    from wildreward.rm import OrdinalRewardModel

    model = OrdinalRewardModel(torch.nn.Identity(), "coral", 4)
    assert model.cutpoints() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    assert OrdinalRewardModel(torch.nn.Identity(), "independent", 4).cutpoints() is None


def test_dropout_disabled_by_default(spread_bert):
    model, tok = build_model(spread_bert, "independent", 4)
    cfg = model.backbone.config
    assert cfg.hidden_dropout_prob == 0.0 and cfg.attention_probs_dropout_prob == 0.0
    model.train()  # even in train mode the forward is deterministic
    enc = encode(tok, fitted_texts(tok))
    with torch.no_grad():
        a = model(enc["input_ids"], enc["attention_mask"])
        b = model(enc["input_ids"], enc["attention_mask"])
    assert torch.equal(a, b)
    with_dropout, _ = build_model(spread_bert, "independent", 4, dropout=True)
    assert with_dropout.backbone.config.hidden_dropout_prob == pytest.approx(0.1)


@pytest.mark.parametrize("head", ["independent", "coral"])
def test_save_load_score_roundtrip(backbone, head, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model, tok = build(backbone, head)
    texts = fitted_texts(tok)
    enc = encode(tok, texts)
    with torch.no_grad():
        expected = (1.0 + torch.sigmoid(model(enc["input_ids"], enc["attention_mask"])).sum(-1)).tolist()

    out = save_reward_model(model, tok, tmp_path / "rm", max_length=MAX_LENGTH, truncation="middle",
                            score_stats={"mean": 2.5})
    assert (out / "model.safetensors").exists()
    meta = json.loads((out / META_FILE).read_text())
    assert meta["head"] == head and meta["num_levels"] == 4
    assert meta["max_length"] == MAX_LENGTH and meta["truncation"] == "middle"
    assert meta["score_stats"] == {"mean": 2.5}
    if head == "independent":
        assert meta["cutpoints"] is None
    else:
        assert len(meta["cutpoints"]) == 3
        assert all(isinstance(c, float) for c in meta["cutpoints"])
        assert meta["cutpoints"][0] < meta["cutpoints"][1] < meta["cutpoints"][2]
        assert meta["cutpoints"] == pytest.approx(model.cutpoints(), abs=1e-7)

    plain = AutoModelForSequenceClassification.from_pretrained(out)
    assert plain.config.num_labels == (3 if head == "independent" else 1)

    rm = RewardModel(out)
    assert rm.texts(EXAMPLES) == texts
    scores = rm.score(EXAMPLES)
    assert len(scores) == len(EXAMPLES)
    assert scores == pytest.approx(expected, abs=1e-5)
    # a tiny token budget runs one text per forward: padding and batch composition must not matter
    one_by_one = (1 + rm.logits_for_texts(texts, max_batch_tokens=1).sigmoid().sum(-1)).tolist()
    assert one_by_one == pytest.approx(expected, abs=1e-5)
    assert all(1.0 <= s <= 4.0 for s in scores)
    # the scores are not all the same (the model really reads the input)
    assert max(scores) - min(scores) > 1e-3


def test_reward_model_without_meta_raises(spread_bert):
    with pytest.raises(FileNotFoundError, match=META_FILE):
        RewardModel(spread_bert)


def test_token_budget_chunks():
    lengths = [5, 1, 9, 3, 3, 20, 2]
    chunks = token_budget_chunks(lengths, 10)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))  # every index exactly once
    assert [lengths[i] for c in chunks for i in c] == sorted(lengths)        # shortest first
    for chunk in chunks:  # padded size within budget, unless one item alone is over it
        assert len(chunk) * max(lengths[i] for i in chunk) <= 10 or len(chunk) == 1
    assert chunks == [[1, 6, 3], [4, 0], [2], [5]]
    assert token_budget_chunks([], 10) == []
    assert token_budget_chunks(lengths, math.inf) == [[1, 6, 3, 4, 0, 2, 5]]  # no cap: length order only

