"""The one error type of the evaluation package."""

from __future__ import annotations


class EvaluationInputError(ValueError):
    """Ground truth or results the official evaluator would crash on or silently mis-score.

    The message names the offending video, annotation or result index (and frame).
    """
