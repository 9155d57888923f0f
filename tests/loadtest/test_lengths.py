"""Length distributions of --input-tokens and --output-tokens: the syntax, its errors, and the draws."""

from __future__ import annotations

import random
import statistics

import pytest

from llm_loadtest.lengths import LengthError, Lengths, parse_lengths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("128", Lengths("fixed", 128)),
        (" uniform:64:256 ", Lengths("uniform", 64, 256)),
        ("UNIFORM:5:5", Lengths("uniform", 5, 5)),
        ("normal:512:128", Lengths("normal", 512, 128)),
        ("normal:20.5:0", Lengths("normal", 20.5, 0)),
    ],
)
def test_syntax(text, expected):
    assert parse_lengths(text) == expected
    assert parse_lengths(str(expected)) == expected  # written back as it is read (run.json, the report)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "at least 1"),
        ("uniform:9:3", "LO <= HI"),
        ("uniform:0:3", "LO <= HI"),
        ("normal:0:3", "MEAN >= 1"),
        ("normal:10", "expected N, uniform:LO:HI or normal:MEAN:SD"),
        ("lognormal:1:2", "expected N"),
        ("-5", "expected N"),
        ("", "expected N"),
    ],
)
def test_errors_say_what_is_expected(text, message):
    with pytest.raises(LengthError, match=message):
        parse_lengths(text)


def test_fixed_is_always_n():
    rng = random.Random(1)
    assert {parse_lengths("37").sample(rng) for _ in range(50)} == {37}


def test_uniform_covers_both_bounds_and_nothing_else():
    rng = random.Random(1)
    draws = [parse_lengths("uniform:3:6").sample(rng) for _ in range(400)]
    assert set(draws) == {3, 4, 5, 6}


def test_normal_has_its_mean_and_spread_and_stays_positive():
    rng = random.Random(1)
    draws = [parse_lengths("normal:200:20").sample(rng) for _ in range(4000)]
    assert abs(statistics.mean(draws) - 200) < 2 and abs(statistics.stdev(draws) - 20) < 2
    assert all(isinstance(d, int) for d in draws)
    assert min(parse_lengths("normal:2:10").sample(rng) for _ in range(500)) == 1  # clipped at one token


def test_same_seed_same_draws():
    spec = parse_lengths("normal:50:15")
    a, b, c = random.Random(7), random.Random(7), random.Random(8)
    first = [spec.sample(a) for _ in range(30)]
    assert first == [spec.sample(b) for _ in range(30)]
    assert first != [spec.sample(c) for _ in range(30)]
