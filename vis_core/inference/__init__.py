"""Video inference: VITA's video segmenter, the per-frame baseline, the online heads'
segmenter, their instances."""

from vis_core.inference.frames import FrameSource, FrameSourceError, resized_input_size
from vis_core.inference.instances import VideoInstances
from vis_core.inference.online import (
    DetectorChunk,
    HeadStep,
    OnlineHead,
    OnlineSegmenter,
    TrackMasks,
    TrackSummary,
)
from vis_core.inference.per_frame import (
    FrameDetection,
    GreedyIouLinker,
    PerFrameConfig,
    PerFrameSegmenter,
    Track,
    link_detections,
    tracks_to_instances,
)
from vis_core.inference.querytrack_tracker import QueryTrackTracker
from vis_core.inference.segmenter import VideoSegmenter

__all__ = [
    "DetectorChunk",
    "FrameDetection",
    "FrameSource",
    "FrameSourceError",
    "GreedyIouLinker",
    "HeadStep",
    "OnlineHead",
    "OnlineSegmenter",
    "PerFrameConfig",
    "PerFrameSegmenter",
    "QueryTrackTracker",
    "Track",
    "TrackMasks",
    "TrackSummary",
    "VideoInstances",
    "VideoSegmenter",
    "link_detections",
    "resized_input_size",
    "tracks_to_instances",
]
