"""YouTube-VIS video mask AP/AR, exact to the official evaluator, with clear input errors."""

from vis_core.evaluation.errors import EvaluationInputError
from vis_core.evaluation.metrics import CategoryAP, YtvisMetrics
from vis_core.evaluation.ytvis_eval import (
    PrecisionRecall,
    YtvisParams,
    evaluate_ytvis,
    precision_recall,
    summarize,
)
from vis_core.evaluation.ytvis_inputs import (
    GroundTruth,
    Results,
    load_ground_truth,
    load_results,
)

__all__ = [
    "CategoryAP",
    "EvaluationInputError",
    "GroundTruth",
    "PrecisionRecall",
    "Results",
    "YtvisMetrics",
    "YtvisParams",
    "evaluate_ytvis",
    "load_ground_truth",
    "load_results",
    "precision_recall",
    "summarize",
]
