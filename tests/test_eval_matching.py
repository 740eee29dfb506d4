"""Greedy matching of one video and category, rule by rule."""

from __future__ import annotations

import numpy as np

from vis_core.evaluation.matching import greedy_match

THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _match(ious, ignored=(), crowd=()):
    ious = np.asarray(ious, dtype=float)
    count = ious.shape[1]
    return greedy_match(
        ious,
        np.asarray(ignored or [False] * count, dtype=bool),
        np.asarray(crowd or [False] * count, dtype=bool),
        THRESHOLDS,
    )


def test_each_gt_is_taken_once_in_score_order():
    matches = _match([[0.9], [0.95]])
    assert matches.matched[0].tolist() == [True, False]  # the first result takes it


def test_threshold_is_inclusive():
    matches = _match([[0.75]])
    assert matches.matched[:, 0].tolist() == [t <= 0.75 for t in THRESHOLDS]


def test_equal_ious_go_to_the_later_gt():
    # The second result overlaps GT 0 only: it is matched only if the first took GT 1.
    matches = _match([[0.8, 0.8], [0.8, 0.0]])
    assert matches.matched[0].tolist() == [True, True]
    reversed_gts = _match([[0.8, 0.8], [0.0, 0.8]])
    assert reversed_gts.matched[0].tolist() == [True, False]


def test_ignored_gt_only_when_no_regular_gt_qualifies():
    # GT 0 ignored with IoU 0.9, GT 1 regular with IoU 0.6: the regular one wins at 0.5.
    matches = _match([[0.9, 0.6]], ignored=[True, False])
    assert matches.matched[0, 0] and not matches.matched_ignored[0, 0]
    # From 0.65 to 0.9 only the ignored GT qualifies: matched, and so ignored.
    assert matches.matched[3:9, 0].all() and matches.matched_ignored[3:9, 0].all()
    assert not matches.matched[9, 0]


def test_crowd_gt_is_never_used_up():
    matches = _match([[0.99], [0.99], [0.99]], ignored=[True], crowd=[True])
    assert matches.matched.all() and matches.matched_ignored.all()
    regular = _match([[0.99], [0.99], [0.99]], ignored=[True])
    assert regular.matched[:, 0].all() and not regular.matched[:, 1:].any()
