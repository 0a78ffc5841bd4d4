"""Rollouts stop on every token that ends a reply, not only the tokenizer's EOS: a tokenizer built here ends
assistant turns with <|eot|> (as Llama-3 instruct does with <|eot_id|>, Qwen with <|im_end|>)."""
import pytest
import torch

from wildreward.dpo.rollout import RolloutEngine, cut_at_stop, end_of_turn_id, stop_token_ids

WORDS = ["hello", "world", "a", "prime", "is", "seven", "thanks", "hi", "name", "number"]
SPECIALS = ["<pad>", "<eos>", "<|eot|>", "<|user|>", "<|assistant|>"]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}<|eot|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tokenizer(chat_template: str | None = TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS + ["[UNK]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="[UNK]",
                                   additional_special_tokens=SPECIALS[2:])
    fast.chat_template = chat_template
    return fast


def ids(tok, *tokens):
    return [tok.convert_tokens_to_ids(t) for t in tokens]


def test_end_of_turn_token_comes_from_the_chat_template():
    tok = tokenizer()
    (eos, eot) = ids(tok, "<eos>", "<|eot|>")
    assert eos != eot and end_of_turn_id(tok) == eot
    assert stop_token_ids(tok) == [eos, eot]
    assert end_of_turn_id(tokenizer(None)) is None and stop_token_ids(tokenizer(None)) == [eos]
    # a template that ends a turn with plain text has no end-of-turn token to add
    plain = tokenizer("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}")
    assert end_of_turn_id(plain) is None and stop_token_ids(plain) == [eos]


@pytest.mark.parametrize("configured", [7, [7, 1], (1, 7)])
def test_generation_config_eos_ids_are_added_int_or_list(configured):
    from transformers import GenerationConfig

    tok = tokenizer()
    got = stop_token_ids(tok, GenerationConfig(eos_token_id=configured))
    assert got[0] == (configured if isinstance(configured, int) else configured[0])
    assert set(got) == {7, *ids(tok, "<eos>", "<|eot|>")} and len(got) == len(set(got))


def test_replies_are_cut_at_the_first_stop_token():
    assert cut_at_stop([5, 6, 2, 7, 1], {1, 2}) == ([5, 6, 2], True)
    assert cut_at_stop([5, 6, 7], {1, 2}) == ([5, 6, 7], False)


def engine_over(tok, responses):
    """An hf engine on ``tok`` whose sampler returns ``responses`` (one prompt)."""
    engine = RolloutEngine.__new__(RolloutEngine)
    engine.backend, engine.use_chat_template, engine.calls, engine.max_response_tokens = "hf", True, 0, 8
    engine.tokenizer, engine.stop_ids = tok, stop_token_ids(tok)
    engine._generate_hf = lambda prompt_ids, n, temperature, top_p: [responses]
    return engine


def test_generate_finishes_on_end_of_turn_not_only_eos():
    tok = tokenizer()
    hello, world, eot, eos = ids(tok, "hello", "world", "<|eot|>", "<eos>")
    engine = engine_over(tok, [[hello, eot, world, eos], [hello, world], [world, eos]])
    samples = engine.generate([{"id": "p", "messages": [{"role": "user", "content": "hi"}]}], 3, 1.0, 1.0)
    assert [(s["response_ids"], s["finished"]) for s in samples] == [
        ([hello, eot], True), ([hello, world], False), ([world, eos], True)]
    assert samples[0]["response"] == "hello"


class RecordingModel:
    device = torch.device("cpu")

    def generate(self, input_ids, **kwargs):
        self.kwargs = kwargs
        n = kwargs["num_return_sequences"]
        return torch.cat([input_ids.repeat_interleave(n, 0), torch.ones(len(input_ids) * n, 2, dtype=torch.long)], 1)


def test_hf_sampling_is_given_every_stop_token():
    tok = tokenizer()
    engine = RolloutEngine.__new__(RolloutEngine)
    engine.tokenizer, engine.stop_ids, engine.seed, engine.calls = tok, stop_token_ids(tok), 0, 1
    engine.max_response_tokens, engine.model = 2, RecordingModel()
    engine._generate_hf([[3, 7], [3]], 2, 1.0, 1.0)
    assert engine.model.kwargs["eos_token_id"] == ids(tok, "<eos>", "<|eot|>")


def test_engine_built_from_a_saved_policy_stops_on_all_of_them(tmp_path):
    """A tiny random Llama saved with this tokenizer and a generation config naming a third id."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = tokenizer()
    eos, eot, world = ids(tok, "<eos>", "<|eot|>", "world")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=64, eos_token_id=eos, pad_token_id=0))
    model.generation_config = GenerationConfig(eos_token_id=[eos, world], pad_token_id=0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    engine = RolloutEngine(str(tmp_path), "hf", max_prompt_tokens=32, max_response_tokens=8,
                           use_chat_template=True, seed=0)
    assert engine.stop_ids == [eos, world, eot]
    samples = engine.generate([{"id": "p", "messages": [{"role": "user", "content": "name a prime number"}]}],
                              16, 1.0, 1.0)
    for s in samples:
        stops = [i for i, t in enumerate(s["response_ids"]) if t in engine.stop_ids]
        assert stops == ([len(s["response_ids"]) - 1] if s["finished"] else [])
    assert any(s["finished"] for s in samples)
