"""Prompt loading: prompt files, first user turns of real chat logs, dedup, length filter, counts."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import CHATLOGS
from wildreward.dpo.prompts import load_prompts, prompt_ids, prompts_from_chatlogs

KEYS = ("malformed", "empty", "duplicates", "too_long", "kept")


@pytest.fixture(scope="module")
def tok(tiny_lm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm)


def reconciles(counts):
    return counts["read"] == sum(counts[k] for k in KEYS)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_first_user_turns_of_real_chat_logs(chatlogs, tok):
    files = [str(CHATLOGS / "chatbot_arena_sample.jsonl"), str(CHATLOGS / "lmsys_chat_sample.jsonl")]
    prompts, counts = prompts_from_chatlogs(files, None, max_prompt_tokens=100_000, tokenizer=tok)
    # An independent recount: first user message per line, whitespace-normalised.
    firsts = []
    for file in files:
        for line in open(file, encoding="utf-8"):
            conv = json.loads(line)["conversation"]
            firsts.append(next(m["content"] for m in conv if m["role"] == "user"))
    unique = {" ".join(t.split()) for t in firsts}
    assert counts == {"read": len(firsts), "malformed": 0, "empty": 0, "duplicates": len(firsts) - len(unique),
                      "too_long": 0, "kept": len(unique)}
    assert counts["duplicates"] > 100  # "hi"-style openers repeat in real logs
    assert {" ".join(p["query"].split()) for p in prompts} == unique
    assert len({p["id"] for p in prompts}) == len(prompts)
    first = prompts[0]
    assert first["messages"] == [{"role": "user", "content": first["query"]}]
    assert first["source"] == f"{files[0]}:1"
    assert first["prompt_tokens"] == len(prompt_ids(tok, first["messages"]))


def test_chat_logs_quarantine_length_filter_and_n(chatlogs, tok):
    prompts, counts = prompts_from_chatlogs([str(CHATLOGS)], None, max_prompt_tokens=256, tokenizer=tok)
    assert reconciles(counts) and counts["kept"] == len(prompts)
    assert counts["malformed"] > 0 and counts["too_long"] > 0 and counts["duplicates"] > 0
    assert max(p["prompt_tokens"] for p in prompts) <= 256
    few, few_counts = prompts_from_chatlogs([str(CHATLOGS)], 25, max_prompt_tokens=256, tokenizer=tok)
    assert few == prompts[:25] and few_counts["kept"] == 25 and reconciles(few_counts)


def test_jsonl_rows_dedup_and_empty(tmp_path, tok):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Write a haiku about rain."},
        "Explain recursion.",                                              # a bare JSON string
        {"prompt": [{"role": "user", "content": "Explain  recursion.\n"}]},  # same after whitespace normalising
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Explain recursion."}]},
        {"prompt": "   "},
        {"prompt": "write a haiku about rain."},                         # case differs: not a duplicate
    ])
    prompts, counts = load_prompts([path], max_prompt_tokens=1024, tokenizer=tok)
    assert counts == {"read": 6, "malformed": 0, "empty": 1, "duplicates": 1, "too_long": 0, "kept": 4}
    assert [p["query"] for p in prompts] == ["Write a haiku about rain.", "Explain recursion.", "Explain recursion.",
                                             "write a haiku about rain."]
    assert prompts[2]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [p["source"] for p in prompts] == [f"{path}:{n}" for n in (1, 2, 4, 6)]
    # ids depend on content only, not on file order
    again, _ = load_prompts([write_jsonl(tmp_path / "q.jsonl", ["Explain recursion."])], max_prompt_tokens=1024,
                            tokenizer=tok)
    assert again[0]["id"] == prompts[1]["id"]


def test_parquet_and_custom_field(tmp_path, tok):
    pq.write_table(pa.Table.from_pylist([{"question": "What is 2+2?"}, {"question": "Name a prime."}]),
                   tmp_path / "a.parquet")
    prompts, counts = load_prompts([str(tmp_path / "a.parquet")], max_prompt_tokens=1024, tokenizer=tok,
                                   field="question")
    assert [p["query"] for p in prompts] == ["What is 2+2?", "Name a prime."] and counts["kept"] == 2
    with pytest.raises(ValueError, match=r"a\.parquet:1: malformed prompt row \(missing_field"):
        load_prompts([str(tmp_path / "a.parquet")], max_prompt_tokens=1024, tokenizer=tok)


def test_directory_of_parquet_and_jsonl(tmp_path, tok):
    folder = tmp_path / "prompts"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([{"messages": [{"role": "user", "content": "Hello there"}]}]),
                   folder / "b.parquet")
    write_jsonl(folder / "a.jsonl", [{"prompt": "Hello  there"}, {"prompt": "Bye"}])
    prompts, counts = load_prompts([str(folder)], max_prompt_tokens=1024, tokenizer=tok)
    assert [p["query"] for p in prompts] == ["Hello  there", "Bye"]  # files in name order
    assert counts == {"read": 3, "malformed": 0, "empty": 0, "duplicates": 1, "too_long": 0, "kept": 2}


def test_length_filter_uses_the_chat_template(tmp_path, tok):
    text = "Summarise the plot of Hamlet in two sentences."
    n = len(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                    tokenize=True, return_dict=False))
    assert n > len(tok(text)["input_ids"]) + 5  # the template and its default system prompt count
    path = write_jsonl(tmp_path / "p.jsonl", [text])
    prompts, counts = load_prompts([path], max_prompt_tokens=n, tokenizer=tok)
    assert counts["kept"] == 1 and prompts[0]["prompt_tokens"] == n
    _, counts = load_prompts([path], max_prompt_tokens=n - 1, tokenizer=tok)
    assert counts == {"read": 1, "malformed": 0, "empty": 0, "duplicates": 0, "too_long": 1, "kept": 0}
    plain, _ = load_prompts([path], max_prompt_tokens=n, tokenizer=tok, use_chat_template=False)
    assert plain[0]["prompt_tokens"] == len(tok(text)["input_ids"])


@pytest.mark.parametrize("row, reason", [
    ({"text": "hello"}, "missing_field"),
    (42, "not_object"),
    ({"prompt": {"role": "user"}}, "messages_not_list"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}]}, "not_single_turn"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "role_order"),
    ({"messages": [{"role": "robot", "content": "a"}]}, "unknown_role"),
])
def test_malformed_rows_raise_with_file_and_line(tmp_path, tok, row, reason):
    path = write_jsonl(tmp_path / "p.jsonl", ["fine", row])
    with pytest.raises(ValueError, match=rf"p\.jsonl:2: malformed prompt row \({reason}"):
        load_prompts([path], max_prompt_tokens=1024, tokenizer=tok)


def test_invalid_json_line_raises(tmp_path, tok):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"p\.jsonl:2: malformed prompt row \(invalid_json"):
        load_prompts([str(path)], max_prompt_tokens=1024, tokenizer=tok)


def test_prompt_ids_without_template_is_single_message(tok):
    with pytest.raises(ValueError, match="without a chat template"):
        prompt_ids(tok, [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}],
                   use_chat_template=False)
