"""The types plugins hand to the hub: metrics and periodic jobs (helpdesks: hub.helpdesk)."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import ClassVar


@dataclass(frozen=True)
class ScalePoint:
    """One answer a customer can click: its stored value and its label."""

    value: int
    label: str
    symbol: str = ""


@dataclass(frozen=True)
class Score:
    """A metric's headline number for a set of answers, with how sure it is."""

    value: float | None
    n: int
    margin: float | None
    unit: str
    formula: str
    groups: dict[str, int] = field(default_factory=dict)
    extra: dict[str, float | None] = field(default_factory=dict)


class Metric:
    """A survey metric such as NPS: scales, wording, grouping and score formula.

    Stored ratings keep the raw value and the scale (number of points) it was given on;
    a metric never rescales them.
    """

    key: ClassVar[str]
    title: ClassVar[str]
    scales: ClassVar[tuple[int, ...]]
    default_scale: ClassVar[int]
    default_question: ClassVar[str]
    attribute_name: ClassVar[str]
    default_cooldown_days: ClassVar[int] = 0
    groups: ClassVar[tuple[str, ...]] = ("negative", "neutral", "positive")

    def points(self, scale: int) -> list[ScalePoint]:
        """The answers offered on `scale`, in the order they are shown."""
        raise NotImplementedError

    def group(self, value: int, scale: int) -> str:
        """The group (e.g. promoter, negative) a raw value belongs to."""
        raise NotImplementedError

    def score(self, values: Sequence[int], scale: int) -> Score:
        """The headline score of `values`, all given on `scale`."""
        raise NotImplementedError

    def score_counts(self, counts: Mapping[int, int], scale: int) -> Score:
        """The score of the answers `counts` stands for (value → how many of them): always
        equal to `score()` of those values. Reports count answers in the database and
        score the counts, so a report of a million answers does no work per answer when
        the metric overrides this (the built-in ones do); by default the counts are
        expanded back into the list of values."""
        return self.score(
            [value for value, count in sorted(counts.items()) for _ in range(count)], scale
        )

    def count_groups(self, values: Sequence[int], scale: int) -> dict[str, int]:
        """How many of `values` fall in each group, every group present."""
        counts = dict.fromkeys(self.groups, 0)
        for value in values:
            counts[self.group(value, scale)] += 1
        return counts

    def count_groups_of(self, counts: Mapping[int, int], scale: int) -> dict[str, int]:
        """How many of the answers `counts` (value → how many) fall in each group, every
        group present (one `group()` call per distinct value)."""
        groups = dict.fromkeys(self.groups, 0)
        for value, count in counts.items():
            if count:
                groups[self.group(value, scale)] += count
        return groups

    def highest(self, scale: int) -> int:
        """The best answer's value on `scale` (10 for NPS, 3 for 3-point CSAT)."""
        return max(point.value for point in self.points(scale))

    def check(self, value: int, scale: int) -> bool:
        """Whether `value` is a valid answer on `scale`."""
        return scale in self.scales and value in {p.value for p in self.points(scale)}

    def note(self, value: int, scale: int, email: str, comment: str = "") -> str:
        """The internal note written to the helpdesk for one rating."""
        text = (
            f"{self.title} {value}/{self.highest(scale)} ({self.group(value, scale)}) from {email}"
        )
        quoted = quote_comment(comment)
        if quoted:
            text += f" — {quoted}"
        return text + " — via SurveyHub"


#: The longest comment quoted in a helpdesk note (the whole comment stays in the hub).
NOTE_COMMENT_LENGTH = 1000
_TAG = re.compile(r"<[^<>]*>")
#: Quotation marks that could seem to close the hub's quote around the comment.
_QUOTES = str.maketrans(dict.fromkeys('"“”„‟″«»＂', "'"))


def quote_comment(comment: str) -> str:
    """A customer's comment as one quoted line of plain text, for a helpdesk note.

    The customer's words must not pass for the hub's own: HTML tags go, control
    characters and line breaks become spaces (no forged extra lines), double quotes and
    their look-alikes become single ones (the quote cannot be closed early), entities
    are decoded first (so `&lt;b&gt;` is a tag too), and the length is capped.
    Returns "" for an empty comment.
    """
    text = _TAG.sub(" ", html.unescape(comment or ""))
    text = text.replace("<", " ").replace(">", " ")  # no half tags either
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )
    text = " ".join(text.translate(_QUOTES).split())
    if len(text) > NOTE_COMMENT_LENGTH:
        text = text[: NOTE_COMMENT_LENGTH - 1].rstrip() + "…"
    return f'"{text}"' if text else ""


@dataclass(frozen=True)
class PeriodicJob:
    """A job the scheduler enqueues every `interval` seconds (one at a time)."""

    name: str
    func: Callable[[], Any]
    interval: float
    queue: str = "default"
