"""Turn extraction and language detection."""
import json

import pytest

from wildreward.extract.turns import detect_language, extract_turns


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def conv(*messages: dict, language: str | None = "en") -> dict:
    return {"conversation_id": "c1", "source": "generic", "user_id": "u7", "language": language,
            "messages": list(messages), "source_file": "f.jsonl"}


def test_every_answered_pair_is_a_turn_and_the_last_is_not():
    u1, a1, u2, a2, u3, a3 = (msg("user", "q1"), msg("assistant", "r1"), msg("user", "q2"), msg("assistant", "r2"),
                              msg("user", "q3"), msg("assistant", "r3"))
    turns = extract_turns(conv(u1, a1, u2, a2, u3, a3))
    assert [(t["id"], t["turn_index"], t["query"], t["response"], t["feedback"]) for t in turns] == [
        ("c1_turn0", 0, "q1", "r1", "q2"), ("c1_turn1", 1, "q2", "r2", "q3")]
    assert turns[0]["history"] == [] and turns[1]["history"] == [u1, a1]
    assert {(t["conversation_id"], t["source"], t["user_id"], t["language"]) for t in turns} == {
        ("c1", "generic", "u7", "en")}


@pytest.mark.parametrize("roles, expected", [
    ("ua", 0), ("u", 0), ("uau", 1), ("uaua", 1), ("uauau", 2), ("", 0), ("ss", 0)])
def test_odd_and_short_conversations(roles, expected):
    names = {"u": "user", "a": "assistant", "s": "system"}
    turns = extract_turns(conv(*(msg(names[r], f"m{i}") for i, r in enumerate(roles))))
    assert [t["turn_index"] for t in turns] == list(range(expected))


def test_system_messages_stay_in_history_and_do_not_count_as_pairs():
    system = msg("system", "You are terse.")
    turns = extract_turns(conv(system, msg("user", "q1"), msg("assistant", "r1"), msg("user", "q2"),
                               msg("assistant", "r2"), msg("user", "q3")))
    assert [(t["id"], t["query"], len(t["history"])) for t in turns] == [("c1_turn0", "q1", 1), ("c1_turn1", "q2", 3)]
    assert turns[0]["history"] == [system] and turns[1]["history"][0] == system


def test_language_is_detected_per_query_when_the_log_has_none():
    turns = extract_turns(conv(msg("user", "Quelle est la capitale de la France et pourquoi ?"),
                               msg("assistant", "Paris."), msg("user", "请用中文再解释一遍这个问题的答案"),
                               msg("assistant", "巴黎。"), msg("user", "thanks"), language=None))
    assert [t["language"] for t in turns] == ["fr", "zh"]


@pytest.mark.parametrize("text, code", [
    # queries from wildchat_sample.jsonl
    ("tell me which stable diffusion prompt i can use to obtain a drawing of a dog made of stars in a starry night "
     "sky ", "en"),
    ("What if Saiyan SpongeBob's Crew and Chuck E. Cheese Crew were in Greek Mythology", "en"),
    ("我有一组0到0.8的数据，我希望把0-0.4的数据映射到0到-500去，"
     "0.4以上的数据映射到0-5000，用python实现，不使用numpy库", "zh"),
    ("诈欺游戏的内容解说提纲", "zh"),
    ("Dis-moi quel prompt utiliser dans stable diffusion pour dessiner des images dans un ciel nocturne avec des "
     "étoiles", "fr"),
    ("En quoi votre expérience et vos aspirations vous permettent-elles d'occuper ce poste ? court reponse ", "fr"),
    ("привет, поможешь с описанием результатов SEM?", "ru"),
])
def test_detect_language_on_real_queries(text, code):
    assert detect_language(text) == code


@pytest.mark.parametrize("text", ["", "   \n\t", None])
def test_detect_language_of_nothing_is_none(text):
    assert detect_language(text) is None


def test_wildchat_turn_ids_are_unique_and_follow_the_original_convention(chatlogs):
    from wildreward.extract.config import ReadConfig
    from wildreward.extract.read import plan_read_tasks, read_task

    cfg = ReadConfig(paths=[str(chatlogs / "wildchat_sample.jsonl")])
    convs = [c for spec in plan_read_tasks(cfg) for c in read_task(spec, cfg) if c["quarantine_reason"] is None]
    turns = [t for c in convs for t in extract_turns(c)]
    assert len(turns) == 1755 and len({t["id"] for t in turns}) == 1755
    assert all(t["id"] == f"{t['conversation_id']}_turn{t['turn_index']}" for t in turns)
    # Detected wherever the log has none; only a blank query and a snippet of code get no language.
    assert sum(t["language"] is None for t in turns) == 2
    # Each turn round-trips to the raw log: query, response and feedback are consecutive messages.
    raw = {json.loads(line)["conversation_hash"]: json.loads(line)["conversation"]
           for line in (chatlogs / "wildchat_sample.jsonl").read_text().splitlines()}
    for t in turns[::37]:
        k = 2 * t["turn_index"]
        assert [m["content"] for m in raw[t["conversation_id"]][k:k + 3]] == [t["query"], t["response"], t["feedback"]]
