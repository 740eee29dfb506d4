"""Convolution with an optional norm and activation, and frozen batch norm (detectron2 layout).

detectron2 checkpoints store a convolution and its norm under one name: `<name>.weight`,
`<name>.bias` and `<name>.norm.*`. `ConvNormAct` is an `nn.Conv2d` carrying its norm as
the child `norm`, so official keys load without renaming.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

Activation = Callable[[Tensor], Tensor]


FUSED_NORM = True  # False: a multiply, then an add (two passes)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms: `[N, C, H, W] -> [N, C, H, W]`.

    All four tensors are buffers (not parameters), so optimisers never touch them and
    there is no `num_batches_tracked`, matching detectron2 checkpoints.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        # Initialised so that the freshly built layer is exactly the identity.
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        # Fold into one multiply-add in the input's dtype (fp16 under autocast stays fp16):
        # one pass over x (`addcmul`) rather than a multiply and then an add.
        scale, shift = scale.view(1, -1, 1, 1).to(x.dtype), shift.view(1, -1, 1, 1).to(x.dtype)
        if not FUSED_NORM:
            return x * scale + shift
        return torch.addcmul(shift, x, scale)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class ConvNormAct(nn.Conv2d):
    """`nn.Conv2d`, then `norm` (a child module, key `norm.*`), then `activation`.

    `forward(x [N, C_in, H, W]) -> [N, C_out, H', W']`. The activation is a plain function
    (no parameters), so it adds no state_dict keys.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        norm: nn.Module | None = None,
        activation: Activation | None = None,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def msra_fill(conv: nn.Conv2d) -> None:
    """He-normal weights for ReLU nets (fan-out), zero bias: detectron2's `c2_msra_fill`."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def xavier_fill(conv: nn.Conv2d) -> None:
    """Caffe2's Xavier fill (uniform, a=1), zero bias: detectron2's `c2_xavier_fill`."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
