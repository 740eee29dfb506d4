"""Segment every video of an annotated dataset into YouTube-VIS results.

Used by validation during training and by `vis segment`; the results go to
`vis_core.evaluation.evaluate_ytvis` or into a results JSON for `vis eval`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from vis_core.data.frames import iter_frames
from vis_core.data.labels import NO_CATEGORY, category_of_label
from vis_core.data.ytvis import YtvisDataset
from vis_core.inference.frames import FrameSource
from vis_core.inference.instances import VideoInstances
from vis_core.modeling.config import ModelConfig


class Segmenter(Protocol):
    def segment(self, frames: FrameSource) -> VideoInstances: ...


def segment_dataset(
    segmenter: Segmenter,
    dataset: YtvisDataset,
    model_config: ModelConfig,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """YouTube-VIS results of every video; instances of classes outside the dataset are
    dropped. `progress(done, total)` is called after each video."""
    categories = category_of_label(
        dataset.categories, model_config.class_names, model_config.num_classes
    )
    results: list[dict[str, Any]] = []
    for done, video in enumerate(dataset.videos, start=1):
        instances = segmenter.segment(lambda video=video: iter_frames(dataset, video))
        entries = instances.to_ytvis_results(video.id, categories)
        results.extend(entry for entry in entries if entry["category_id"] != NO_CATEGORY)
        if progress is not None:
            progress(done, len(dataset))
    return results
