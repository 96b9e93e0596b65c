"""`Stabilizer`: revisable partials in, append-only text out."""

from __future__ import annotations

import random

import pytest

from app.stabilizer import Stabilizer


def feed(partials: list[str], final: str, **kw: int) -> tuple[list[str], str]:
    s = Stabilizer(**kw)
    deltas = [d for p in partials if (d := s.partial(p))]
    delta, completed = s.final(final)
    if delta:
        deltas.append(delta)
    return deltas, completed


def test_revised_words_are_held_back_until_two_hypotheses_agree() -> None:
    deltas, completed = feed(
        ["It was", "It was the best", "It was the beast of", "It was the best of times,"],
        "It was the best of times, it was the worst of times.")
    assert "".join(deltas) == completed == "It was the best of times, it was the worst of times."
    assert "beast" not in "".join(deltas)
    assert deltas[0] == "It was"  # both hypotheses agree; "the best" is newer than that


def test_first_hypothesis_alone_releases_nothing() -> None:
    s = Stabilizer()
    assert s.partial("Thank you.") == ""
    assert s.stable_words == 0
    assert s.partial("Ever tried.") == ""  # disagrees with the first: still nothing
    assert s.partial("Ever tried. Ever") == "Ever tried."  # agreed; the newest "Ever" held
    assert s.stable_words == 2


def test_final_that_rewrites_released_words_keeps_the_stream_append_only() -> None:
    deltas, completed = feed(["the cat sat on", "the cat sat on the"], "a cat sat on the mat")
    assert "".join(deltas) == completed
    assert completed.startswith("the cat sat") and completed.endswith("the mat")


@pytest.mark.parametrize("seed", range(20))
def test_random_revisions_never_repeat_or_retract(seed: int) -> None:
    rng = random.Random(seed)
    truth = "one two three four five six seven eight nine ten".split()
    partials = []
    for n in range(1, len(truth) + 1):
        words = list(truth[:n])
        if rng.random() < 0.5:
            words[rng.randrange(n)] = rng.choice(["won", "to", "tree", "for", "sex"])
        partials.append(" ".join(words))
    deltas, completed = feed(partials, " ".join(truth))
    assert "".join(deltas) == completed
    assert len(completed.split()) == len(truth)


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        Stabilizer(agree=0)
