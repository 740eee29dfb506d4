"""Video inference: VITA's video segmenter, the per-frame baseline, their instances."""

from vis_core.inference.frames import FrameSource, FrameSourceError, resized_input_size
from vis_core.inference.instances import VideoInstances
from vis_core.inference.per_frame import (
    FrameDetection,
    GreedyIouLinker,
    PerFrameConfig,
    PerFrameSegmenter,
    Track,
    link_detections,
    tracks_to_instances,
)
from vis_core.inference.segmenter import VideoSegmenter

__all__ = [
    "FrameDetection",
    "FrameSource",
    "FrameSourceError",
    "GreedyIouLinker",
    "PerFrameConfig",
    "PerFrameSegmenter",
    "Track",
    "VideoInstances",
    "VideoSegmenter",
    "link_detections",
    "resized_input_size",
    "tracks_to_instances",
]
