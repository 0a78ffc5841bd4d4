"""Rule filters: each rule fires on a crafted turn, in order, and a normal turn passes."""
from collections import Counter

import pytest

from wildreward.extract.config import FilterConfig
from wildreward.extract.filters import RULES, filter_reason

CFG = FilterConfig()
QUERY = "Can you explain how binary search works on a sorted list of integers?"
RESPONSE = ("Binary search repeatedly halves the search interval: compare the target with the middle element, "
            "then continue in the left or right half until the element is found or the interval is empty.")
FEEDBACK = "Thanks, that makes sense. How would I write it recursively?"


def turn(**changes) -> dict:
    base = {"id": "c_turn0", "conversation_id": "c", "turn_index": 0, "source": "generic", "user_id": None,
            "language": "en", "history": [], "query": QUERY, "response": RESPONSE, "feedback": FEEDBACK}
    return {**base, **changes}


def test_rules_are_listed_in_order():
    assert RULES == ("empty_message", "message_too_long", "language", "history_too_long", "too_many_words",
                     "short_query", "short_response", "image", "search", "identity", "file", "media", "pii")


def test_a_normal_turn_passes():
    assert filter_reason(turn(), CFG) is None
    assert filter_reason(turn(language="zh", query="请解释一下二分查找算法是如何工作的",
                              response="二分查找每次将搜索区间减半，直到找到目标为止。"), CFG) is None


CASES = [
    ("empty_message", turn(feedback="  \n")),
    ("empty_message", turn(response="")),
    ("message_too_long", turn(response="word " * 30_000)),
    ("language", turn(language="fr")),
    ("language", turn(language=None)),
    ("history_too_long", turn(history=[{"role": "user", "content": "x"}] * 21)),
    # over 4,096 words (characters in Chinese) in history + query + response
    ("too_many_words", turn(history=[{"role": "user", "content": "w " * 200}] * 20,
                            query="one two three four " + "five " * 73, response="r " * 100)),
    ("too_many_words", turn(language="zh", history=[{"role": "user", "content": "字" * 4050}],
                            query="请解释一下二分查找算法",
                            response="二分查找每次将搜索区间减半，直到找到目标为止。" * 4)),
    ("short_query", turn(query="fix my code please")),
    ("short_query", turn(language="zh", query="你好！！ ？")),   # 2 characters once punctuation is ignored
    ("short_response", turn(response="Sure, here it is: nine words long, really.")),
    ("short_response", turn(language="zh", query="请解释一下二分查找算法", response="好的，这是答案。")),
    ("image", turn(query="Please draw a cat sitting on a red chair")),
    ("image", turn(query="Write a Midjourney prompt for a futuristic city at night")),
    ("image", turn(language="zh", query="帮我画一只可爱的小猫咪吧")),
    ("search", turn(query="Summarize the article at https://example.com/news/1 for me")),
    ("search", turn(query="Can you browse and tell me the latest news about Apple?")),
    ("identity", turn(query="Who are you and who created you, tell me honestly")),
    ("identity", turn(query="Is ChatGPT better than a human tutor for learning maths?")),
    ("identity", turn(language="zh", query="你是谁？请详细介绍一下")),
    ("file", turn(query="Summarize the attached report in five bullet points")),
    ("file", turn(query="What does the error in my screenshot mean exactly?")),
    ("media", turn(query="Write a script for a YouTube video about cooking pasta")),
    ("media", turn(query="Convert this mp3 into text and tell me what they say")),
    ("pii", turn(query="Please write a polite reply to john.doe@example.com about the delay")),
    ("pii", turn(query="Draft a text message for (555) 123-4567 saying I am running late")),
    ("pii", turn(language="zh", query="请帮我把手机号13812345678写进这份简历里面", response="好的，" + "内容" * 10)),
]


@pytest.mark.parametrize("rule, t", CASES, ids=[f"{rule}-{i}" for i, (rule, _) in enumerate(CASES)])
def test_each_rule_fires(rule, t):
    assert filter_reason(t, CFG) == rule


def test_word_cap_counts_history_query_and_response():
    history = [{"role": "user", "content": "w " * 200}] * 20
    fits = turn(history=history, query="q " * 46, response="r " * 50)  # 4000 + 46 + 50 = 4096 words
    assert filter_reason(fits, CFG) is None
    assert filter_reason(turn(history=history, query="q " * 47, response="r " * 50), CFG) == "too_many_words"
    assert filter_reason(turn(history=history, query="q " * 47, response="r " * 50),
                         FilterConfig(max_total_words=None)) is None


def test_every_rule_has_a_case():
    assert {rule for rule, _ in CASES} == set(RULES)


def test_first_failing_rule_wins():
    assert filter_reason(turn(language="fr", query="draw"), CFG) == "language"
    assert filter_reason(turn(query="draw a cat"), CFG) == "short_query"
    assert filter_reason(turn(query="Please draw a cat from https://x.org on a chair"), CFG) == "image"


def test_keyword_and_pii_rules_can_be_switched_off():
    cfg = FilterConfig(keyword_rules=False, pii=False)
    assert filter_reason(turn(query="Please draw a cat sitting on a red chair"), cfg) is None
    assert filter_reason(turn(query="Please write a polite reply to john.doe@example.com about it"), cfg) is None
    assert filter_reason(turn(language="fr"), FilterConfig(languages=["fr"])) is None


def test_pii_rule_reads_the_query_only():
    # as in the paper: the feedback is the next turn's query and is checked there; a response may quote addresses
    assert filter_reason(turn(feedback="Great, send the summary to john.doe@example.com when done"), CFG) is None
    assert filter_reason(turn(response=RESPONSE + " Call me at (555) 123-4567 for help."), CFG) is None
    assert filter_reason(turn(response=RESPONSE + " Mail support@example.org."), CFG) is None


@pytest.mark.parametrize("query", [
    "What is the main drawback of using recursion here?",      # not "draw"
    "请帮我写一个动画短片的剧本大纲，主角是一只猫",             # 动画 (animation) is a writing task, not 画一
    "How do I read a text file line by line in Python?",        # plain "file" is a normal coding task
    "Explain the difference between TCP and UDP protocols",
])
def test_keywords_match_whole_words_only(query):
    assert filter_reason(turn(query=query, language="zh" if "请" in query else "en"), CFG) is None


def test_rule_counts_on_wildchat_sample(chatlogs):
    from wildreward.extract.config import ReadConfig
    from wildreward.extract.read import plan_read_tasks, read_task
    from wildreward.extract.turns import extract_turns

    cfg = ReadConfig(paths=[str(chatlogs / "wildchat_sample.jsonl")])
    turns = [t for s in plan_read_tasks(cfg) for c in read_task(s, cfg) if c["messages"] for t in extract_turns(c)]
    counts = Counter(filter_reason(t, CFG) for t in turns)
    assert set(counts) - {None} <= set(RULES) and sum(counts.values()) == len(turns) == 1755
    # Real logs: most turns that go are non-EN/ZH or too short, and a majority of turns survive.
    assert counts["language"] == max(counts[r] for r in RULES) and counts[None] > len(turns) / 2
