"""The paper's rule filters (Appendix A): each dropped turn gets the name of the first rule it fails.

Keyword and PII rules look at the query only, as the paper's do (lower-cased for keywords). Keywords target tasks
a text-only reward model cannot judge from the transcript (the assistant would need tools, files or media the log
does not hold) or that are about the assistant.
English terms match on word boundaries, so "draw" does not fire on "drawback"; Chinese has no word boundaries, so
Chinese terms are phrases that do not occur inside unrelated words (画一/画个, not bare 画, which is also in
动画 'animation' and 漫画 'comics').
"""
from __future__ import annotations

import re
import unicodedata

from wildreward.extract.config import FilterConfig

RULES = ("empty_message", "message_too_long", "language", "history_too_long", "too_many_words", "short_query",
         "short_response", "image", "search", "identity", "file", "media", "pii")


def words(*terms: str) -> str:
    """Regex alternatives (themselves regexes) matched as whole words."""
    return r"\b(?:" + "|".join(terms) + r")\b"


def phrases(*terms: str) -> str:
    return "|".join(re.escape(t) for t in terms)


KEYWORDS = {
    # Image generation: the response would be a picture, or a prompt for an image model.
    "image": re.compile("|".join([
        words("draw", "drawing", "sketch", r"(?:generate|create|make|render) an? (?:image|picture|photo|logo)",
              "picture of", "image of", "photo of", "midjourney", "stable diffusion", r"dall-?e", "text-to-image",
              "image generation"),
        phrases("画一", "画个", "画张", "画幅", "画出", "帮我画", "画画", "绘图", "绘制", "生成图片", "生成图像",
                "生成一张", "图片", "图像"),
    ])),
    # Web search / live information / links the model would have to open.
    "search": re.compile("|".join([
        words(r"search (?:the )?(?:web|internet|online)", "browse", "browsing", "google it",
              r"look (?:it |this )?up online", "latest news", "today'?s news", "current weather", "real-time",
              "this link", "this website"),
        r"https?://", r"\bwww\.",
        phrases("搜索一下", "帮我搜", "上网", "联网", "查一下", "最新新闻", "最新的新闻", "网址", "这个链接"),
    ])),
    # Questions about the assistant's identity or vendor: the answer depends on the deployment, not the log.
    "identity": re.compile("|".join([
        words("who are you", r"are you (?:chat ?gpt|gpt|an ai|a bot|human)",
              r"(?:what|which) (?:language )?model are you", r"what(?:'s| is) your name",
              r"who (?:made|created|trained|built|developed) you", "introduce yourself", r"chat ?gpt", "openai",
              r"gpt-?3(?:\.5)?", r"gpt-?4"),
        phrases("你是谁", "你叫什么", "你的名字", "你是什么模型", "你是哪个模型", "介绍一下你自己", "介绍你自己",
                "你是chatgpt", "你是gpt"),
    ])),
    # Files the user refers to but the log does not contain. Bare "file" is not used: code questions about files
    # are ordinary text tasks.
    "file": re.compile("|".join([
        words(r"attach(?:ed|ment|ments)?", r"screenshots?", r"upload(?:ed|ing|s)?", "pdf",
              r"(?:this|the following|my) (?:document|image|photo|picture|spreadsheet)"),
        phrases("附件", "截图", "上传", "这张图", "这个文件", "这份文件", "文档里"),
    ])),
    # Audio / video the model would have to watch, hear or produce.
    "media": re.compile("|".join([
        words(r"videos?", "audio", "youtube", "mp3", "mp4", "podcast", "watch this", "listen to",
              r"play (?:this|the|a) (?:song|video|music)"),
        phrases("视频", "音频", "播放", "听这段"),
    ])),
}
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE = re.compile(
    r"(?<!\d)1[3-9]\d{9}(?!\d)"                                           # Chinese mobile
    r"|(?<![\w+])(?:\+\d{1,3}[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)")  # NANP-style, separators required


def filter_reason(turn: dict, cfg: FilterConfig) -> str | None:
    """Name of the first rule (in ``RULES`` order) that ``turn`` fails, or None to keep it."""
    texts = (turn["query"], turn["response"], turn["feedback"])
    if any(not t or not t.strip() for t in texts):
        return "empty_message"
    if any(len(t) > cfg.max_message_chars for t in texts):
        return "message_too_long"
    if turn["language"] not in cfg.languages:
        return "language"
    if len(turn["history"]) > cfg.max_history_messages:
        return "history_too_long"
    query_words = count_words(turn["query"], turn["language"])
    response_words = count_words(turn["response"], turn["language"])
    if cfg.max_total_words is not None:
        # the paper's 4,096-word cap on history + turn; counted lazily, the history being the long part
        total = query_words + response_words
        for message in turn["history"]:
            if total > cfg.max_total_words:
                break
            total += count_words(message["content"] or "", turn["language"])
        if total > cfg.max_total_words:
            return "too_many_words"
    if query_words < cfg.min_query_words:
        return "short_query"
    if response_words < cfg.min_response_words:
        return "short_response"
    if cfg.keyword_rules:
        query = turn["query"].lower()  # faster than re.IGNORECASE
        for rule, pattern in KEYWORDS.items():
            if pattern.search(query):
                return rule
    if cfg.pii and has_pii(turn["query"]):
        return "pii"
    return None


def has_pii(text: str) -> bool:
    """E-mail address or phone number. Only the query is checked, as in the paper (08.split.py): the feedback is
    the next turn's query and is checked there, and a response quoting a made-up address is not the user's PII."""
    return bool(("@" in text and EMAIL.search(text)) or PHONE.search(text))


def count_words(text: str, language: str | None) -> int:
    """Whitespace words; for Chinese, characters other than whitespace and punctuation (as in the paper)."""
    if language == "zh":
        return sum(1 for ch in text if not ch.isspace() and not unicodedata.category(ch).startswith("P"))
    return len(text.split())
