"""The spot-check estimator: proportional stratified questions, weighted estimates, and the
95 % interval's coverage over many simulated answer draws."""

from __future__ import annotations

import numpy as np
import pytest

from must_engine.trust.spot_check import (
    NONE_OF_THESE,
    SpotCheckPlan,
    estimate,
    stratified_interval,
)


def population(rng, n=1500, classes=8):
    """Made-up predictions: accuracy rises with confidence, as in a real classifier."""
    pred = rng.choice(classes, size=n, p=rng.dirichlet(np.ones(classes) * 2))
    conf = rng.beta(2, 1.5, size=n)
    right = rng.random(n) < 0.15 + 0.8 * conf
    truth = np.where(right, pred, (pred + rng.integers(1, classes, size=n)) % classes)
    zero = np.where(rng.random(n) < 0.7, pred, rng.integers(0, classes, size=n))
    return pred, conf, truth, zero


def answer(plan, truth, count):
    """Answer ``count`` questions in the plan's order, truthfully."""
    answers, per = {}, {}
    for _ in range(count):
        q = plan.next_question(set(answers), per)
        answers[q] = int(truth[int(q)])
        h = plan.stratum_of(q)
        per[h] = per.get(h, 0) + 1
    return answers


def test_interval_covers_the_true_accuracy_about_95_percent():
    rng = np.random.default_rng(0)
    hits = {"adapted": 0, "zero-shot": 0}
    draws = 0
    for _ in range(6):
        pred, conf, truth, zero = population(rng)
        paths = [str(i) for i in range(len(pred))]
        true_acc = {"adapted": (pred == truth).mean(), "zero-shot": (zero == truth).mean()}
        for seed in range(60):
            plan = SpotCheckPlan.build(paths, pred, conf, seed=seed)
            answers = answer(plan, truth, 30)
            est = estimate(plan, answers, {p: int(pred[int(p)]) for p in answers},
                           {p: int(zero[int(p)]) for p in answers}, [str(c) for c in range(8)])
            assert est.answers == 30
            for name, result in (("adapted", est.adapted), ("zero-shot", est.zero_shot)):
                hits[name] += result.overall.low <= true_acc[name] <= result.overall.high
            draws += 1
    for name, count in hits.items():
        coverage = count / draws
        print(f"coverage {name}: {coverage:.3f} over {draws} draws")
        # 360 draws: a true 95 % lands in [0.92, 0.98] with probability > 0.99
        assert 0.92 <= coverage <= 0.985, (name, coverage)


def test_questions_follow_each_strata_share():
    rng = np.random.default_rng(1)
    pred, conf, truth, _ = population(rng, n=900, classes=3)
    plan = SpotCheckPlan.build([str(i) for i in range(900)], pred, conf, seed=0)
    answers = answer(plan, truth, 30)
    sizes = plan.sizes()
    got = {}
    for p in answers:
        got[plan.stratum_of(p)] = got.get(plan.stratum_of(p), 0) + 1
    for h, size in sizes.items():
        assert abs(got.get(h, 0) - 30 * size / 900) <= 1.0, (h, got.get(h, 0), size)


def test_answers_are_weighted_by_their_stratum_size():
    # 90 images in stratum 0, 10 in stratum 1; 2 answers from 0 (right), 8 from 1 (wrong):
    # unweighted 20 %, weighted 90 %.
    correct = np.array([1, 1] + [0] * 8)
    strata = np.array([0, 0] + [1] * 8)
    result = stratified_interval(correct, strata, {0: 90, 1: 10}, bands=3)
    assert result.value == pytest.approx(0.9)
    assert result.low < 0.9 < result.high


def test_skip_and_none_of_these():
    rng = np.random.default_rng(2)
    pred, conf, truth, zero = population(rng, n=200, classes=4)
    paths = [str(i) for i in range(200)]
    plan = SpotCheckPlan.build(paths, pred, conf, seed=0, exclude={"0", "1"})
    assert "0" not in plan.paths and len(plan) == 198
    first = plan.next_question(set(), {})
    # skipped: asked but not answered, so the next question comes from the same stratum
    second = plan.next_question({first}, {})
    assert second != first and plan.stratum_of(second) == plan.stratum_of(first)
    answers = {first: NONE_OF_THESE, second: int(pred[int(second)])}
    est = estimate(plan, answers, {p: int(pred[int(p)]) for p in answers},
                   {p: int(pred[int(p)]) for p in answers}, ["a", "b", "c", "d"])
    assert est.none_of_these == 1
    assert est.adapted.overall.value == pytest.approx(0.5)


def test_more_answers_to_halve_the_interval():
    rng = np.random.default_rng(3)
    pred, conf, truth, zero = population(rng)
    paths = [str(i) for i in range(len(pred))]
    plan = SpotCheckPlan.build(paths, pred, conf, seed=0)
    answers = answer(plan, truth, 30)
    est = estimate(plan, answers, {p: int(pred[int(p)]) for p in answers},
                   {p: int(zero[int(p)]) for p in answers}, [str(c) for c in range(8)])
    more = est.more_answers_to_halve
    # the interval shrinks roughly with the square root of the answers: about 3x more
    assert 60 <= more <= 120, more
    overall = est.adapted.overall
    from must_engine.trust.spot_check import wilson
    ratio = overall.effective_answers / overall.answers
    low, high = wilson(overall.value, (30 + more) * ratio)
    assert high - low <= overall.width / 2
    low, high = wilson(overall.value, (30 + more - 1) * ratio)
    assert high - low > overall.width / 2


def test_plan_round_trips_and_asks_the_same_questions():
    rng = np.random.default_rng(4)
    pred, conf, truth, _ = population(rng, n=300)
    plan = SpotCheckPlan.build([str(i) for i in range(300)], pred, conf, seed=7)
    again = SpotCheckPlan.from_dict(plan.to_dict())
    assert list(answer(plan, truth, 10)) == list(answer(again, truth, 10))
