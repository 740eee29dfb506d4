"""A batch of training clips, and its conversion to model inputs and padded targets.

Dimension letters: B clips, T frames, N instances, H x W a padded frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from vis_core.data.clips import Clip
from vis_core.data.targets import ClipTargets


@dataclass(frozen=True)
class ClipBatch:
    """Clips of one batch, each at its own size (frames `[T, h, w, 3]` uint8)."""

    frames: tuple[Tensor, ...]
    targets: tuple[ClipTargets, ...]

    @classmethod
    def from_clips(cls, clips: Sequence[Clip]) -> ClipBatch:
        lengths = {clip.num_frames for clip in clips}
        if len(lengths) != 1:
            raise ValueError(f"clips of one batch need the same length, got {sorted(lengths)}")
        return cls(
            frames=tuple(torch.from_numpy(clip.frames) for clip in clips),
            targets=tuple(
                ClipTargets(
                    labels=torch.from_numpy(clip.labels),
                    masks=torch.from_numpy(clip.masks),
                    track_ids=torch.from_numpy(clip.track_ids),
                )
                for clip in clips
            ),
        )

    def to(self, device: torch.device | str) -> ClipBatch:
        return ClipBatch(
            frames=tuple(frames.to(device, non_blocking=True) for frames in self.frames),
            targets=tuple(target.to(device) for target in self.targets),
        )

    def model_inputs(
        self, preprocess: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, tuple[ClipTargets, ...]]:
        """Normalised images `[B, T, 3, H, W]` and targets with masks `[N, T, H, W]`.

        `preprocess` is the detector's (normalise, then zero-pad to its size divisibility);
        clips are then zero-padded to the largest, after normalisation as the official
        ImageList does, and the masks padded with background to match.
        """
        images = [preprocess(frames) for frames in self.frames]  # each [T, 3, h', w']
        height = max(image.shape[-2] for image in images)
        width = max(image.shape[-1] for image in images)
        padded = torch.stack([_pad_to(image, height, width) for image in images])
        targets = tuple(
            ClipTargets(
                labels=target.labels,
                masks=_pad_to(target.masks, height, width),
                track_ids=target.track_ids,
            )
            for target in self.targets
        )
        return padded, targets


def _pad_to(tensor: Tensor, height: int, width: int) -> Tensor:
    """Zero-pad the last two dimensions at the bottom and right."""
    pad_h, pad_w = height - tensor.shape[-2], width - tensor.shape[-1]
    return F.pad(tensor, (0, pad_w, 0, pad_h)) if pad_h or pad_w else tensor
