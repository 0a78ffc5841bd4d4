"""The RM input text is the original's (THU-KEG/WildReward ``build_text``), character for character.

The expected strings are written out by hand from ../shared/docs/paper.md §2.2, not produced by the code under
test: released WildReward checkpoints were trained on exactly this text.
"""
from wildreward.template import build_rm_text

EMPTY_HISTORY = """# Task Description
You are an expert conversation evaluator. Your task is to judge the **User's Satisfaction** with the Assistant's response based on the conversation context.
Please rate the response on a scale of 1 to 5 integers.

# Scoring Criteria
[1] CLEARLY NEGATIVE / REJECTION
[2] CORRECTION / ERROR POINTER (Negative)
[3] NEUTRAL
[4] POSITIVE ENGAGEMENT
[5] CLEAR SATISFACTION

# Input Data
## Context (History)
No previous context.

## User Query
What is 2+2?

## Assistant Response
4.

# Output
Based on the criteria above, please output ONLY the integer score (1, 2, 3, 4, or 5)."""  # noqa: E501

WITH_HISTORY = """# Task Description
You are an expert conversation evaluator. Your task is to judge the **User's Satisfaction** with the Assistant's response based on the conversation context.
Please rate the response on a scale of 1 to 5 integers.

# Scoring Criteria
[1] CLEARLY NEGATIVE / REJECTION
[2] CORRECTION / ERROR POINTER (Negative)
[3] NEUTRAL
[4] POSITIVE ENGAGEMENT
[5] CLEAR SATISFACTION

# Input Data
## Context (History)
user: hi
assistant: hello there


## User Query
Sort [3,1,2] in Python

## Assistant Response
sorted([3, 1, 2])

# Output
Based on the criteria above, please output ONLY the integer score (1, 2, 3, 4, or 5)."""  # noqa: E501


def test_template_with_empty_history_is_the_originals():
    assert build_rm_text([], "What is 2+2?", "4.") == EMPTY_HISTORY
    assert build_rm_text(None, "What is 2+2?", "4.") == EMPTY_HISTORY


def test_template_with_history_is_the_originals():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
    assert build_rm_text(history, "Sort [3,1,2] in Python", "sorted([3, 1, 2])") == WITH_HISTORY


def test_template_strips_only_the_ends():
    text = build_rm_text([], "  padded query  ", "response\n\n")
    assert "## User Query\n  padded query  \n\n## Assistant Response\nresponse\n\n\n\n# Output" in text
