"""Official (detectron2-style) checkpoints to the project's modules, and back.

The project's modules use the official parameter names below each prefix, so converting
is a prefix mapping: `backbone.` -> `detector.backbone.`, `sem_seg_head.pixel_decoder.` ->
`detector.pixel_decoder.`, `sem_seg_head.predictor.` -> `detector.frame_decoder.`,
`vita_module.` -> `vita.`.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under `prefix`, with the prefix removed."""
    return {
        key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)
    }
