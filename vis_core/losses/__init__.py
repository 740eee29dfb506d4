"""Training losses: Hungarian matchers, the frame-level and clip-level criteria, and the
`VitaCriterion` that combines them into named, weighted `Losses`; the QueryTrack head's
`QueryTrackCriterion`."""

from vis_core.losses.criterion import Losses, VitaCriterion
from vis_core.losses.matcher import FrameMatcher, Matching
from vis_core.losses.querytrack_criterion import QueryTrackCriterion
from vis_core.losses.vita_matcher import ClipMatcher

__all__ = [
    "ClipMatcher",
    "FrameMatcher",
    "Losses",
    "Matching",
    "QueryTrackCriterion",
    "VitaCriterion",
]
