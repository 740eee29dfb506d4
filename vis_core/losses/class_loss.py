"""Class cross-entropy over all predictions, the no-object class down-weighted.

Shared by the frame and clip criteria: K classes plus the no-object class K, whose
weight is `no_object_weight` (0.1 officially) so the many unmatched predictions do not
drown the matched ones.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class ClassLoss(nn.Module):
    """`forward(logits [N, Q, K+1], target_classes [N, Q]) -> scalar` weighted CE."""

    def __init__(self, num_classes: int, no_object_weight: float):
        super().__init__()
        weight = torch.ones(num_classes + 1)
        weight[-1] = no_object_weight
        self.register_buffer("empty_weight", weight)

    def forward(self, logits: Tensor, target_classes: Tensor) -> Tensor:
        return F.cross_entropy(logits.float().transpose(1, 2), target_classes, self.empty_weight)
