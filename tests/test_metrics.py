"""NPS, CSAT and CES against hand-computed examples (see docs/metrics.md)."""

from __future__ import annotations

import pytest

from hub.registry import Registry


@pytest.fixture(scope="module")
def metrics():
    return Registry.load().metrics


def test_nps_worked_example(metrics):
    # 4 promoters (10, 9, 9, 10), 2 passives (8, 7), 4 detractors (6, 3, 0, 5)
    score = metrics["nps"].score([10, 9, 9, 8, 7, 6, 3, 10, 0, 5], 11)
    assert score.value == 0.0
    assert score.n == 10
    assert score.groups == {"detractor": 4, "passive": 2, "promoter": 4}
    # 1.96 * sqrt((0.4 + 0.4 - 0.0²) / 10) * 100
    assert score.margin == pytest.approx(55.436, abs=0.001)


def test_nps_second_example(metrics):
    score = metrics["nps"].score([10, 10, 9, 7, 3], 11)
    assert score.value == pytest.approx(40.0)  # 60% promoters - 20% detractors
    # 1.96 * sqrt((0.6 + 0.2 - 0.4²) / 5) * 100
    assert score.margin == pytest.approx(70.122, abs=0.001)


@pytest.mark.parametrize(
    ("values", "expected"), [([], None), ([9], 100.0), ([6], -100.0), ([8], 0.0)]
)
def test_nps_empty_and_single_answers(metrics, values, expected):
    score = metrics["nps"].score(values, 11)
    assert score.value == expected
    assert score.n == len(values)
    assert score.margin is None  # one answer says nothing about the spread


@pytest.mark.parametrize(
    ("value", "group"),
    [(0, "detractor"), (6, "detractor"), (7, "passive"), (8, "passive"), (9, "promoter")],
)
def test_nps_groups(metrics, value, group):
    assert metrics["nps"].group(value, 11) == group


def test_csat_five_point_example(metrics):
    score = metrics["csat"].score([5, 4, 3, 2, 1, 5, 4, 4], 5)
    assert score.value == 62.5  # 5 of 8 answers are 4 or 5
    assert score.groups == {"negative": 2, "neutral": 1, "positive": 5}
    # Wilson: 1.96 * sqrt(p(1-p)/n + 1.96²/(4n²)) / (1 + 1.96²/n) * 100, p = 0.625, n = 8
    assert score.margin == pytest.approx(27.871, abs=0.001)
    assert score.unit == "%"


def test_csat_three_and_two_point_groups(metrics):
    three = metrics["csat"].score([3, 3, 2, 1], 3)
    assert three.value == 50.0
    assert three.groups == {"negative": 1, "neutral": 1, "positive": 2}
    two = metrics["csat"].score([2, 1, 2], 2)
    assert two.value == pytest.approx(66.667, abs=0.001)
    assert two.groups == {"negative": 1, "neutral": 0, "positive": 2}


def test_csat_margin_is_not_zero_when_everyone_agrees(metrics):
    # Wilson, p = 1, n = 4: 1.96 * sqrt(1.96² / 64) / (1 + 1.96² / 4) * 100
    score = metrics["csat"].score([3, 3, 3, 3], 3)
    assert score.value == 100.0
    assert score.margin == pytest.approx(24.495, abs=0.001)


def test_csat_empty_and_single(metrics):
    assert metrics["csat"].score([], 3).value is None
    single = metrics["csat"].score([1], 3)
    assert (single.value, single.n, single.margin) == (0.0, 1, None)


def test_ces_example(metrics):
    score = metrics["ces"].score([7, 6, 5, 4, 1], 7)
    assert score.value == pytest.approx(4.6)
    # sample sd = sqrt(21.2 / 4); t(0.975, df=4) = 2.776445; margin = t * sd / sqrt(5)
    assert score.margin == pytest.approx(2.859, abs=0.001)
    assert score.extra["percent_positive"] == 60.0
    assert score.extra["percent_positive_margin"] == pytest.approx(32.583, abs=0.001)
    assert score.groups == {"negative": 1, "neutral": 1, "positive": 3}


def test_ces_empty_and_single(metrics):
    assert metrics["ces"].score([], 7).value is None
    single = metrics["ces"].score([6], 7)
    assert (single.value, single.margin) == (6.0, None)


@pytest.mark.parametrize(
    ("key", "scale", "values"),
    [
        ("nps", 11, list(range(0, 11))),
        ("csat", 2, [1, 2]),
        ("csat", 3, [1, 2, 3]),
        ("csat", 5, [1, 2, 3, 4, 5]),
        ("ces", 7, [1, 2, 3, 4, 5, 6, 7]),
    ],
)
def test_scales_offer_exactly_their_values(metrics, key, scale, values):
    metric = metrics[key]
    assert [p.value for p in metric.points(scale)] == values
    assert all(metric.check(v, scale) for v in values)
    assert not metric.check(values[-1] + 1, scale)
    assert not metric.check(values[0] - 1, scale)


def test_csat_refuses_a_scale_it_does_not_offer(metrics):
    assert not metrics["csat"].check(3, 4)


def test_note_wording(metrics):
    note = metrics["nps"].note(9, 11, "jane@example.com", "Fast and friendly")
    assert note == 'NPS 9/10 (promoter) from jane@example.com — "Fast and friendly" — via SurveyHub'
    assert metrics["csat"].note(1, 3, "a@b.c") == "CSAT 1/3 (negative) from a@b.c — via SurveyHub"


def test_defaults(metrics):
    assert metrics["nps"].attribute_name == "surveyhubNpsScoreNum"
    assert metrics["csat"].default_scale == 3
    assert (metrics["nps"].default_cooldown_days, metrics["ces"].default_cooldown_days) == (30, 0)


def test_a_comment_cannot_pass_for_the_hubs_own_lines_in_the_note(metrics):
    forged = (
        'Fine"\n— via SurveyHub\nNPS 10/10 (promoter) from ceo@example.com <b>bold</b>\x00\u2028x'
    )
    note = metrics["nps"].note(3, 11, "jane@example.com", forged)
    assert "\n" not in note and "\x00" not in note and "\u2028" not in note
    assert "<b>" not in note
    assert note == (
        "NPS 3/10 (detractor) from jane@example.com — \"Fine' — via SurveyHub NPS 10/10 "
        '(promoter) from ceo@example.com bold x" — via SurveyHub'
    )
    assert note.count('"') == 2  # one quoted span, opened and closed by the hub
    long = metrics["nps"].note(9, 11, "jane@example.com", "x" * 5000)
    assert len(long) < 1100 and long.endswith('…" — via SurveyHub')


def test_long_tags_entities_and_look_alike_quotes_are_neutralised(metrics):
    comment = (
        "<img src=x onerror=alert(1) " + "a" * 600 + "> &lt;b&gt;hi&lt;/b&gt; ok” — via SurveyHub"
    )
    note = metrics["nps"].note(9, 11, "jane@example.com", comment)
    assert "<" not in note and ">" not in note and "&lt;" not in note and "onerror" not in note
    assert note.count('"') == 2 and "”" not in note
