"""Text statistics: counts of characters, words, lines and sentences, and the commonest words."""

import re
from collections import Counter
from typing import Any

from rest_framework import serializers

from jobs.handlers import register
from jobs.handlers.base import JobHandler, Progress

# Apostrophes (straight or curly) join word parts, so "don't" and "O'Brien" are one word each.
WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
# A sentence ends at . ! or ? followed by whitespace or the end, so "3.14" does not split.
# The look-behind lets a match start only where a run of marks starts: without it, a run that
# is not followed by whitespace was tried again from each of its marks, so 150,000 dots before
# a letter took minutes (quadratic); now a run is looked at once.
SENTENCE_END = re.compile(r"(?<![.!?])[.!?]+(?=\s|$)")


class WordCountParameters(serializers.Serializer):
    text = serializers.CharField(
        allow_blank=True,
        max_length=1_000_000,
        # Whitespace is part of what is counted, so keep it.
        trim_whitespace=False,
        help_text="The text to analyse.",
    )
    top = serializers.IntegerField(
        required=False,
        default=10,
        min_value=0,
        max_value=100,
        help_text="How many of the most common words to list.",
    )


@register
class WordCount(JobHandler):
    name = "word_count"
    description = (
        "Count the characters, words, lines and sentences of a text and list its commonest words."
    )
    Parameters = WordCountParameters
    quick = True

    def run(self, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
        text: str = params["text"]
        words = [word.lower() for word in WORD.findall(text)]
        counts = Counter(words)
        # Ties are broken alphabetically so the same text always gives the same list.
        top_words = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: params["top"]]
        return {
            "characters": len(text),
            "characters_no_spaces": sum(not char.isspace() for char in text),
            "words": len(words),
            "unique_words": len(counts),
            "lines": len(text.splitlines()),
            "sentences": _count_sentences(text),
            "average_word_length": round(sum(map(len, words)) / len(words), 2) if words else 0.0,
            "top_words": [[word, count] for word, count in top_words],
        }


def _count_sentences(text: str) -> int:
    """Count the stretches of text that contain a word and end a sentence (or the text)."""
    return sum(1 for part in SENTENCE_END.split(text) if WORD.search(part))
