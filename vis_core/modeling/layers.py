"""Transformer building blocks shared by the frame decoder and VITA.

Parameter names follow the official Mask2Former/VITA layers (`self_attn`,
`multihead_attn`, `norm`, `linear1`, `linear2`, `layers.{i}`), so checkpoints map onto
them key for key. `nn.MultiheadAttention` is sequence-first: tensors are `[L, N, C]`
(L tokens, N batch entries, C channels).

Post-norm (the official default): `x = norm(x + sublayer(x))`. Pre-norm:
`x = x + sublayer(norm(x))`.

The attention layers never ask `nn.MultiheadAttention` for its attention weights (the
official layers drop them too), so it runs fused `scaled_dot_product_attention` instead
of its explicit softmax(QK^T)V, which also averages the weights over heads for nothing
(`FUSED_ATTENTION`; the same outputs to rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

FUSED_ATTENTION = True  # False: the explicit path that also returns the weights


def with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


def xavier_fill_matrices(module: nn.Module) -> None:
    """The official layers' initialisation: Xavier-uniform for every weight matrix."""
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


class SelfAttentionLayer(nn.Module):
    """Self-attention over `[L, N, C]` with query/key position embeddings and a residual."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        xavier_fill_matrices(self)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
    ) -> Tensor:
        """x, pos: `[L, N, C]`; attn_mask: `[L, L]` or `[N*heads, L, L]`; padding: `[N, L]`."""
        h = self.norm(x) if self.pre_norm else x
        q = k = with_pos(h, pos)
        out = self.self_attn(
            q,
            k,
            value=h,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=not FUSED_ATTENTION,
        )[0]
        x = x + self.dropout(out)
        return x if self.pre_norm else self.norm(x)


class CrossAttentionLayer(nn.Module):
    """Queries `[Lq, N, C]` attend to a memory `[Lm, N, C]`, with a residual."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        xavier_fill_matrices(self)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        """attn_mask: `[N*heads, Lq, Lm]` (True or -inf blocks); padding: `[N, Lm]`."""
        h = self.norm(x) if self.pre_norm else x
        out = self.multihead_attn(
            query=with_pos(h, query_pos),
            key=with_pos(memory, pos),
            value=memory,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=not FUSED_ATTENTION,
        )[0]
        x = x + self.dropout(out)
        return x if self.pre_norm else self.norm(x)


class FFNLayer(nn.Module):
    """Two-layer feed-forward block `[..., C] -> [..., C]` with a residual."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, pre_norm: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm
        xavier_fill_matrices(self)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x) if self.pre_norm else x
        x = x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(h)))))
        return x if self.pre_norm else self.norm(x)


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them: `[..., in] -> [..., out]`."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class PositionEmbeddingSine(nn.Module):
    """DETR's 2D sine position embedding, normalised to [0, 2π] over the map.

    `forward(x [B, *, H, W]) -> [B, 2 * num_pos_feats, H, W]` (y features, then x).
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0, normalize: bool = True):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        ones = torch.ones(batch, height, width, device=x.device, dtype=torch.float32)
        y_embed = ones.cumsum(1)
        x_embed = ones.cumsum(2)
        if self.normalize:
            eps, scale = 1e-6, 2 * torch.pi
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (
            2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats
        )
        pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)
        pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def _interleave_sin_cos(angles: Tensor) -> Tensor:
    """`[B, H, W, F] -> [B, H, W, F]`: sin of even features, cos of odd, interleaved."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(3)


def box_sine_embedding(boxes: Tensor, num_pos_feats: int, temperature: float = 10000.0) -> Tensor:
    """DAB-DETR's sine embedding of boxes: `[..., 4]` in [0, 1] -> `[..., 4 * num_pos_feats]`.

    Each coordinate, scaled by 2π, gets `num_pos_feats` features (sin and cos interleaved,
    the frequencies of `PositionEmbeddingSine`), in the boxes' coordinate order.
    """
    if num_pos_feats % 2:
        raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    angles = boxes.float()[..., None] * (2 * torch.pi) / dim_t  # [..., 4, F]
    features = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1)
    return features.flatten(-3)  # [..., 4, F/2, 2] -> [..., 4 * F]
