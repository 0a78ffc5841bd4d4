import pytest

from wildreward.extract.config import RefusalConfig
from wildreward.extract.refine import apply_refusal_verdict, looks_like_refusal, map_label, needs_refusal_check

REFUSAL_EN = "I'm sorry, but I cannot help with making explosives."
REFUSAL_ZH = "抱歉，我无法提供这方面的帮助。"
ANSWER = "Here is a Python function that reverses a string: def rev(s): return s[::-1]"


@pytest.mark.parametrize("response", [
    REFUSAL_EN,
    "AS AN AI language model, I do not have opinions.",
    "I can\u2019t do that.",                       # curly apostrophe
    "I am unable to browse the internet.",
    "I'm not able to share personal data.",
    REFUSAL_ZH,
    "作为一个人工智能，我没有个人观点。",
    "对不起，这个请求我不能满足。",
])
def test_refusal_phrases_are_caught_in_english_and_chinese(response):
    assert looks_like_refusal(response, max_chars=300)


@pytest.mark.parametrize("response", [
    ANSWER,
    "Sure! The capital of France is Paris.",
    "这是一个反转字符串的Python函数。",
    "",
])
def test_ordinary_answers_are_not_refusals(response):
    assert not looks_like_refusal(response, max_chars=300)


def test_only_responses_shorter_than_the_cap_are_screened():
    long_refusal = "I cannot help with that. " + "x" * 300
    assert not looks_like_refusal(long_refusal, max_chars=300)
    assert looks_like_refusal(long_refusal, max_chars=len(long_refusal) + 1)
    exactly = "I cannot." + " " * 291
    assert len(exactly) == 300
    assert not looks_like_refusal(exactly, max_chars=300)      # "shorter than", not "at most"
    assert looks_like_refusal(exactly[:-1], max_chars=300)


@pytest.mark.parametrize("raw_label, expected", [(1, True), (2, True), (3, False), (4, False), (5, False)])
def test_paper_variant_checks_only_negative_refusals(raw_label, expected):
    cfg = RefusalConfig(variant="paper")
    assert needs_refusal_check(raw_label, REFUSAL_EN, cfg) is expected
    assert needs_refusal_check(raw_label, ANSWER, cfg) is False


@pytest.mark.parametrize("raw_label", [1, 2, 3, 4, 5])
def test_code_variant_checks_every_refusal(raw_label):
    cfg = RefusalConfig(variant="code")
    assert needs_refusal_check(raw_label, REFUSAL_ZH, cfg) is True
    assert needs_refusal_check(raw_label, ANSWER, cfg) is False


def test_refusal_check_respects_length_cap_and_switch():
    assert not needs_refusal_check(1, REFUSAL_EN, RefusalConfig(max_response_chars=20))
    assert not needs_refusal_check(1, REFUSAL_EN, RefusalConfig(enabled=False, variant="code"))


@pytest.mark.parametrize("raw_label, verdict, expected", [
    (1, 1, 5), (2, 1, 5),                 # unjustified negative feedback on a correct refusal -> level 4
    (1, 0, 1), (2, 0, 2),                 # false refusal: the complaint stands
    (1, 2, 1), (2, 2, 2),                 # the model answered: unchanged
    (4, 1, 4), (5, 1, 5), (3, 1, 3),      # only negative labels are revisited
    (4, 0, 4), (5, 0, 5),                 # paper never lowers a label
])
def test_paper_verdicts(raw_label, verdict, expected):
    assert apply_refusal_verdict(raw_label, verdict, "paper") == expected


@pytest.mark.parametrize("raw_label, verdict, expected", [
    (1, 1, 5), (2, 1, 5), (3, 1, 5), (4, 1, 5), (5, 1, 5),    # correct refusal -> 5
    (1, 0, 1), (2, 0, 1), (3, 0, 1), (4, 0, 1), (5, 0, 1),    # false refusal -> 1
    (1, 2, 1), (2, 2, 2), (3, 2, 3), (4, 2, 4), (5, 2, 5),    # answered -> unchanged
])
def test_code_verdicts(raw_label, verdict, expected):
    assert apply_refusal_verdict(raw_label, verdict, "code") == expected


def test_bad_verdict_or_variant_is_rejected():
    with pytest.raises(ValueError, match="verdict"):
        apply_refusal_verdict(1, 3, "paper")
    with pytest.raises(ValueError, match="verdict"):
        apply_refusal_verdict(1, -1, "code")
    with pytest.raises(ValueError, match="variant"):
        apply_refusal_verdict(1, 1, "strict")


def test_map_label():
    assert [map_label(raw) for raw in (1, 2, 3, 4, 5)] == [1, 2, None, 3, 4]


@pytest.mark.parametrize("raw", [0, 6, -1, None, "4"])
def test_map_label_rejects_out_of_range(raw):
    with pytest.raises(ValueError):
        map_label(raw)
