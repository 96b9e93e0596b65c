"""LocalAgreement-2: the committed prefix only grows and never changes."""

from __future__ import annotations

import random

from adapters.local.agreement import LocalAgreement, common_prefix, normalize_word


def test_normalize_ignores_case_and_punctuation() -> None:
    assert normalize_word("Tried,") == normalize_word("tried.") == "tried"
    assert normalize_word("don't") == "don't"


def test_common_prefix_compares_normalized_words() -> None:
    assert common_prefix(["Ever", "tried,"], ["ever", "tried.", "ever"]) == 2
    assert common_prefix(["a", "b"], ["a", "c"]) == 1
    assert common_prefix([], ["a"]) == 0


def test_first_hypothesis_is_all_tentative() -> None:
    agreement = LocalAgreement().update(["ever", "tried"])
    assert agreement.stable == ()
    assert agreement.tentative == ("ever", "tried")
    assert agreement.text == "ever tried"


def test_two_agreeing_hypotheses_commit_their_common_prefix() -> None:
    la = LocalAgreement()
    la.update("it was the best".split())
    agreement = la.update("it was the beast of times".split())
    assert agreement.stable == ("it", "was", "the")
    assert agreement.tentative == ("beast", "of", "times")


def test_stable_prefix_survives_a_rewriting_hypothesis() -> None:
    la = LocalAgreement()
    la.update("ever tried ever".split())
    la.update("ever tried ever failed".split())
    agreement = la.update("never tried ever failed no".split())
    # "never" rewrote a stable word: the stable text stays; both tails agree on "failed".
    assert agreement.stable == ("ever", "tried", "ever", "failed")
    assert agreement.tentative == ("no",)


def test_disagreement_commits_nothing_new() -> None:
    la = LocalAgreement()
    la.update("a b c".split())
    la.update("a b c d".split())
    assert la.update("a b c e f".split()).stable == ("a", "b", "c")
    assert la.update("a b c g f".split()).stable == ("a", "b", "c")


def test_a_rewritten_stable_word_does_not_block_later_commits() -> None:
    la = LocalAgreement()
    la.update("and short".split())
    la.update("and short the".split())
    agreement = la.update("in short the period".split())
    assert agreement.stable == ("and", "short", "the")
    assert agreement.tentative == ("period",)
    agreement = la.update("in short the period was".split())
    assert agreement.stable == ("and", "short", "the", "period")
    assert agreement.text == "and short the period was"


def test_random_hypotheses_never_change_the_committed_prefix() -> None:
    rng = random.Random(7)
    truth = "it was the best of times it was the worst of times".split()
    la = LocalAgreement()
    previous: tuple[str, ...] = ()
    for step in range(200):
        length = min(len(truth), 1 + step // 10)
        hyp = list(truth[:length])
        if hyp and rng.random() < 0.5:  # corrupt a word of the hypothesis
            hyp[rng.randrange(len(hyp))] = rng.choice(["the", "beast", "tines", "was"])
        agreement = la.update(hyp)
        assert agreement.stable[:len(previous)] == previous
        assert agreement.text.split()[:len(agreement.stable)] == list(agreement.stable)
        previous = agreement.stable
    assert len(previous) > 0
