"""Ground truth of training clips, as the criterion consumes it.

Dimension letters: N instances, T frames, H x W the padded input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ClipTargets:
    """The instances of one clip of T frames.

    labels `[N]` int64: contiguous class index in [0, K).
    masks `[N, T, H, W]` bool: each instance's mask per frame (all False where absent),
        at the padded input size, aligned with the clip's images.
    track_ids `[N]` int64: instance identity within the video (for the similarity loss
        and for matching frame-level targets to clip-level ones).
    """

    labels: Tensor
    masks: Tensor
    track_ids: Tensor

    def __post_init__(self) -> None:
        count = self.labels.shape[0]
        if self.masks.dim() != 4 or self.masks.shape[0] != count:
            raise ValueError(f"masks must be [N={count}, T, H, W], got {tuple(self.masks.shape)}")
        if self.track_ids.shape != (count,):
            raise ValueError(f"track_ids must be [N={count}], got {tuple(self.track_ids.shape)}")

    @property
    def num_frames(self) -> int:
        return self.masks.shape[1]

    @property
    def present(self) -> Tensor:
        """`[N, T]` bool: the instance's mask is non-empty in that frame."""
        return self.masks.flatten(2).any(-1)

    def frame(self, t: int) -> FrameTargets:
        """The instances visible in frame `t` (frame-level targets contain only those)."""
        keep = self.present[:, t]
        return FrameTargets(
            labels=self.labels[keep], masks=self.masks[keep, t], track_ids=self.track_ids[keep]
        )

    def to(self, device: torch.device | str) -> ClipTargets:
        return ClipTargets(
            labels=self.labels.to(device),
            masks=self.masks.to(device),
            track_ids=self.track_ids.to(device),
        )


@dataclass(frozen=True)
class FrameTargets:
    """The instances visible in one frame: labels `[N]`, masks `[N, H, W]`, track_ids `[N]`."""

    labels: Tensor
    masks: Tensor
    track_ids: Tensor
