"""Training losses: Hungarian matchers, the frame-level and clip-level criteria, and the
`VitaCriterion` that combines them into named, weighted `Losses`."""

from vis_core.losses.criterion import Losses, VitaCriterion
from vis_core.losses.matcher import FrameMatcher, Matching
from vis_core.losses.vita_matcher import ClipMatcher

__all__ = ["ClipMatcher", "FrameMatcher", "Losses", "Matching", "VitaCriterion"]
