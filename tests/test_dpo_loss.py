"""DPO loss values by hand, and sequence log-probs against a naive full log-softmax on a tiny Llama."""
import math

import pytest
import torch
import torch.nn.functional as F

from wildreward.dpo.loss import dpo_loss, kl_estimate, sequence_logps

LOG2_F32 = torch.tensor(2.0).log().item()


def softplus(x: float) -> float:  # -log σ(-x)
    return math.log1p(math.exp(x))


# Two pairs with β = 0.5: h = (πc - rc) - (πr - rr) = (1 - (-1)) = 2 and (0 - 1) = -1, so z = βh = 1 and -0.5.
PAIRS = dict(policy_chosen=torch.tensor([-10.0, -5.0]), policy_rejected=torch.tensor([-12.0, -4.0]),
             ref_chosen=torch.tensor([-11.0, -5.0]), ref_rejected=torch.tensor([-11.0, -5.0]))
Z = [1.0, -0.5]


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_sigmoid_loss_with_label_smoothing(eps):
    loss, _ = dpo_loss(**PAIRS, beta=0.5, label_smoothing=eps)
    expected = sum((1 - eps) * softplus(-z) + eps * softplus(z) for z in Z) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ipo_and_hinge_losses():
    ipo, _ = dpo_loss(**PAIRS, beta=0.5, loss_type="ipo")
    assert ipo.item() == pytest.approx(((2 - 1) ** 2 + (-1 - 1) ** 2) / 2)  # (h - 1/(2β))²
    hinge, _ = dpo_loss(**PAIRS, beta=0.5, loss_type="hinge")
    assert hinge.item() == pytest.approx((0.0 + 1.5) / 2)  # max(0, 1 - z)


def test_metrics():
    _, metrics = dpo_loss(**PAIRS, beta=0.5)
    assert metrics == pytest.approx({"reward_chosen": 0.5 * (1 + 0) / 2, "reward_rejected": 0.5 * (-1 + 1) / 2,
                                     "reward_margin": (1 - 0.5) / 2, "reward_accuracy": 0.5})


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_sigmoid_gradient_matches_formula(eps):
    pc = PAIRS["policy_chosen"].clone().requires_grad_()
    loss, _ = dpo_loss(pc, PAIRS["policy_rejected"], PAIRS["ref_chosen"], PAIRS["ref_rejected"], beta=0.5,
                       label_smoothing=eps)
    loss.backward()
    sig = torch.sigmoid(torch.tensor(Z))
    expected = 0.5 * (-(1 - eps) * (1 - sig) + eps * sig) / 2  # d/dπc of the mean loss
    assert torch.allclose(pc.grad, expected, atol=1e-7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(**PAIRS, loss_type="kto")
    with pytest.raises(ValueError, match="sigmoid loss only"):
        dpo_loss(**PAIRS, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        dpo_loss(**PAIRS, label_smoothing=0.5)
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="at least one pair"):
        dpo_loss(*[torch.zeros(0)] * 4)


def test_kl_estimate():
    # (-10 + 12) + (-20 + 21) = 3 nats over 5 tokens
    assert kl_estimate(torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -21.0]), torch.tensor([2, 3])) == \
        pytest.approx(0.6)
    logps = torch.tensor([-3.0, -7.0])
    assert kl_estimate(logps, logps, torch.tensor([1, 4])) == 0.0
    with pytest.raises(ValueError):
        kl_estimate(logps, logps, torch.tensor([0, 0]))


# ---------------------------------------------------------------- sequence_logps on a tiny Llama

@pytest.fixture(scope="module")
def models(tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    ref = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    ref.requires_grad_(False)
    return policy, ref, AutoTokenizer.from_pretrained(tiny_lm)


@pytest.fixture(scope="module")
def tiny_gpt2(models):
    """Absolute position embeddings: left padding only works if position ids skip the pads."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = models[2]
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2,
                                      initializer_range=0.2, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id)).eval()


def rows(tok):
    """(prompt ids, response ids) of different lengths: a chat-templated prompt and a response ending in EOS."""
    out = []
    for prompt, response in [("What is 2+2?", "It is 4."), ("Name a colour.", "Blue, like the sky at noon."),
                             ("Hi", "Hello! How can I help you today? Ask me anything at all.")]:
        p = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                    tokenize=True, return_dict=False)
        out.append((list(p), tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
    return out


def batch(pairs, pad_id, side):
    """Padded input_ids, attention_mask, loss_mask (1 on response tokens)."""
    width = max(len(p) + len(r) for p, r in pairs)
    ids, attn, loss = [], [], []
    for p, r in pairs:
        n_pad = width - len(p) - len(r)
        seq, a, m = p + r, [1] * (len(p) + len(r)), [0] * len(p) + [1] * len(r)
        pad = ([pad_id] * n_pad, [0] * n_pad, [0] * n_pad)
        if side == "left":
            seq, a, m = pad[0] + seq, pad[1] + a, pad[2] + m
        else:
            seq, a, m = seq + pad[0], a + pad[1], m + pad[2]
        ids.append(seq), attn.append(a), loss.append(m)
    return torch.tensor(ids), torch.tensor(attn), torch.tensor(loss)


def naive_logps(model, pairs, length_normalize=False):
    """One unpadded row at a time, a full fp32 log-softmax over the vocabulary."""
    out = []
    for p, r in pairs:
        ids = torch.tensor([p + r])
        logp = F.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0, :-1]
        token = logp.gather(-1, ids[0, 1:, None]).squeeze(-1)[len(p) - 1:]
        out.append(token.mean() if length_normalize else token.sum())
    return torch.stack(out)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("length_normalize", [False, True])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sequence_logps_matches_naive(models, tiny_gpt2, arch, side, length_normalize):
    _, _, tok = models
    policy = models[0] if arch == "llama" else tiny_gpt2
    pairs = rows(tok)
    with torch.no_grad():
        expected = naive_logps(policy, pairs, length_normalize)
        for chunk in (3, 256):
            got = sequence_logps(policy, *batch(pairs, tok.pad_token_id, side), length_normalize=length_normalize,
                                 chunk=chunk)
            assert got.dtype == torch.float32 and got.shape == (3,)
            assert torch.allclose(got, expected, rtol=1e-6, atol=1e-4), (chunk, got, expected)


def test_sequence_logps_gradient_matches_naive(models):
    """The chunked, recomputed fp32 path gives the gradient of the plain computation."""
    policy, _, tok = models
    pairs = rows(tok)
    policy.zero_grad()
    sequence_logps(policy, *batch(pairs, tok.pad_token_id, "left"), chunk=4).sum().backward()
    got = {n: p.grad.clone() for n, p in policy.named_parameters()}
    policy.zero_grad()
    naive_logps(policy, pairs).sum().backward()
    for name, param in policy.named_parameters():
        assert torch.allclose(got[name], param.grad, rtol=1e-3, atol=1e-5), name
    policy.zero_grad()


def test_step_zero_logit_is_exactly_zero_and_loss_log2(models):
    policy, ref, tok = models
    pairs = rows(tok)
    chosen = batch(pairs, tok.pad_token_id, "left")
    rejected = batch(pairs[::-1], tok.pad_token_id, "right")
    pc, pr = sequence_logps(policy, *chosen), sequence_logps(policy, *rejected)
    with torch.no_grad():
        rc, rr = sequence_logps(ref, *chosen), sequence_logps(ref, *rejected)
    assert torch.equal(pc.detach(), rc) and torch.equal(pr.detach(), rr)  # so every logit β[(πc-rc)-(πr-rr)] is 0.0
    for loss_type in ("sigmoid", "ipo", "hinge"):
        loss, metrics = dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.0, loss_type=loss_type)
        assert metrics["reward_chosen"] == metrics["reward_rejected"] == metrics["reward_margin"] == 0.0
        assert metrics["reward_accuracy"] == 0.0
    loss, _ = dpo_loss(pc, pr, rc, rr, label_smoothing=0.1)
    assert loss.item() == LOG2_F32
    loss.backward()  # and the policy still gets a gradient at step 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    policy.zero_grad()


def test_gradients_reach_the_policy_only(models):
    policy, ref, tok = models
    pairs = rows(tok)
    chosen, rejected = batch(pairs, tok.pad_token_id, "right"), batch(pairs[::-1], tok.pad_token_id, "left")
    ref.requires_grad_(True)  # even a reference computed with autograd on gets no gradient
    try:
        policy.zero_grad(), ref.zero_grad()
        loss, _ = dpo_loss(sequence_logps(policy, *chosen), sequence_logps(policy, *rejected),
                           sequence_logps(ref, *chosen), sequence_logps(ref, *rejected))
        loss.backward()
        assert all(p.grad is None for p in ref.parameters())
        grads = [p.grad for p in policy.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    finally:
        ref.requires_grad_(False)
        policy.zero_grad()


def test_same_model_as_reference_gets_the_policy_gradient(models):
    """Step 0 with one model for both roles: detaching the reference keeps the plain policy gradient."""
    policy, _, tok = models
    pairs = rows(tok)
    chosen, rejected = batch(pairs, tok.pad_token_id, "right"), batch(pairs[::-1], tok.pad_token_id, "right")

    def grads(ref_no_grad):
        policy.zero_grad()
        pc, pr = sequence_logps(policy, *chosen), sequence_logps(policy, *rejected)
        with torch.set_grad_enabled(not ref_no_grad):
            rc, rr = sequence_logps(policy, *chosen), sequence_logps(policy, *rejected)
        dpo_loss(pc, pr, rc, rr)[0].backward()
        return [p.grad.clone() for p in policy.parameters()]

    for a, b in zip(grads(True), grads(False)):
        assert torch.equal(a, b)
    policy.zero_grad()


def test_sequence_logps_rejects_bad_masks(models):
    policy, _, tok = models
    ids, attn, loss = batch(rows(tok), tok.pad_token_id, "right")
    with pytest.raises(ValueError, match="first token"):
        sequence_logps(policy, ids, attn, torch.ones_like(loss))
    with pytest.raises(ValueError, match="padding"):
        sequence_logps(policy, ids, attn, loss | (1 - attn) * torch.arange(ids.shape[1]).gt(0).long())
    empty = loss.clone()
    empty[1] = 0
    with pytest.raises(ValueError, match="no response tokens"):
        sequence_logps(policy, ids, attn, empty)


# ---------------------------------------------------------------- update_step: the reference computes as the policy

class AutocastEngine:
    """What ``update_step`` needs of an engine, computing as ``DDPEngine`` with precision bf16 does: fp32 weights
    under bf16 autocast (the real engine needs a Ray Train worker). It only accumulates gradients."""

    weights_dtype = torch.float32

    def __init__(self, model, enabled=True):
        self.model, self.autocast = model, torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)

    def backward_micro(self, compute_loss):
        with self.autocast:
            loss = compute_loss(self.model)
        loss.backward()


def pair_slots(tok):
    return [({"prompt_ids": p, "chosen_ids": r, "rejected_ids": r[:2] + [tok.eos_token_id]}, 1.0)
            for p, r in rows(tok)]


def run_update(engine, reference, tok, length_normalize):
    from wildreward.dpo.config import DPOConfig
    from wildreward.dpo.loop import update_step

    cfg = DPOConfig.model_validate({"loss": {"length_normalize": length_normalize}})
    out = update_step(engine, reference, pair_slots(tok), micro=2, n_pairs=3, scale=1, cfg=cfg,
                      pad_id=tok.pad_token_id, device=torch.device("cpu"), times={})
    engine.model.zero_grad()
    return out


@pytest.mark.parametrize("length_normalize", [False, True])
def test_reference_pass_runs_under_the_engines_autocast(models, length_normalize):
    # Policy and reference hold the same weights, so at step 0 every DPO logit must be exactly 0 (loss log 2,
    # no KL) even though the engine computes in bf16: a reference computed otherwise puts noise there.
    policy, ref, tok = models
    out = run_update(AutocastEngine(policy), ref, tok, length_normalize)
    assert out["dpo_margin"] == 0.0 and out["kl_pairs"] == 0.0
    assert out["loss"] == pytest.approx(LOG2_F32, abs=1e-7)


def test_kl_pairs_is_per_token_with_or_without_length_normalisation(models):
    import copy

    policy, _, tok = models
    moved = copy.deepcopy(policy)
    with torch.no_grad():
        for param in moved.parameters():
            param.add_(0.05 * torch.randn_like(param))
    engine = AutocastEngine(policy, enabled=False)
    summed, normalised = (run_update(engine, moved, tok, flag)["kl_pairs"] for flag in (False, True))
    assert abs(summed) > 1e-3
    assert normalised == pytest.approx(summed, rel=1e-5)


def test_disable_dropout_also_stops_attention_dropout(tiny_lm):
    from transformers import AutoModelForCausalLM

    from wildreward.dpo.loop import disable_dropout

    # attention dropout is a rate the attention code passes to a function, not an nn.Dropout module
    model = AutoModelForCausalLM.from_pretrained(tiny_lm, attention_dropout=0.5).train()
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
        disable_dropout(model)
        assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
