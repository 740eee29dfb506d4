"""Mask2Former's masked-attention transformer decoder (VITA's copy), run on every frame.

Learnable queries attend to the pixel decoder's three coarsest maps in turn (level `i % 3`,
low resolution first). Before each layer, the previous prediction's mask logits, resized
to that level, restrict every query's cross-attention to the pixels it currently covers
(sigmoid >= 0.5); a query that would see no pixel at all sees every pixel instead.
A prediction (class logits, mask logits) is made from the initial queries and after
every layer. The `decoder_norm`-ed query states after each layer are the "frame queries"
that VITA consumes.

Parameter names are the official ones below `sem_seg_head.predictor.`, so
`FrameDecoder.load_state_dict(strip_prefix(sd, "sem_seg_head.predictor."), strict=True)`
loads an official checkpoint.

Dimension letters: N frames (the batch), C hidden channels, D mask channels, Q queries,
K classes (K+1 logits, no-object last), h x w a feature level, H x W the mask features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vis_core.modeling.config import FrameDecoderConfig
from vis_core.modeling.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    PositionEmbeddingSine,
    SelfAttentionLayer,
)
from vis_core.modeling.mask_pilot import MaskPilot

# The official decoder always reads the 3 coarsest pixel-decoder maps (strides 32, 16, 8).
FEATURE_LEVELS = 3
MASK_EMBED_LAYERS = 3


@dataclass(frozen=True)
class FramePrediction:
    """One decoder stage's prediction for every frame.

    pred_logits: `[N, Q, K+1]` class logits, no-object last.
    pred_masks: `[N, Q, H, W]` mask logits at the mask-feature resolution.
    """

    pred_logits: Tensor
    pred_masks: Tensor


@dataclass(frozen=True)
class FrameDecoderOutput:
    """What the frame decoder returns, in train and eval mode alike.

    pred_logits: `[N, Q, K+1]` and pred_masks: `[N, Q, H, W]`, from the last layer.
    aux_outputs: the `layers` earlier predictions, in order; entry 0 is made from the
        learnable queries before any layer.
    frame_queries: `[L, N, Q, C]`, the `decoder_norm`-ed query states of the last L layers:
        L = `vita_last_layers` in training, 1 in eval (what VITA consumes).
    pilot_predictions: with a `MaskPilot`, the pilot queries' `layers + 1` predictions
        (`[N, M, K+1]`, `[N, M, H, W]`, in the order of `predictions`); else empty.
    """

    pred_logits: Tensor
    pred_masks: Tensor
    aux_outputs: tuple[FramePrediction, ...]
    frame_queries: Tensor
    pilot_predictions: tuple[FramePrediction, ...] = ()

    @property
    def predictions(self) -> tuple[FramePrediction, ...]:
        """All `layers + 1` predictions, the aux ones first and the final one last."""
        return (*self.aux_outputs, FramePrediction(self.pred_logits, self.pred_masks))


@dataclass(frozen=True)
class DecoderMemory:
    """What the layers attend, per feature level (low resolution first): tokens and
    positions `[h_l*w_l, N, C]` (sequence-first, row-major over the map), sizes (h_l, w_l)."""

    tokens: tuple[Tensor, ...]
    positions: tuple[Tensor, ...]
    sizes: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class InitialQueries:
    """Queries to start the layers from instead of the learnable ones: content and
    position `[Q, N, C]` (sequence-first)."""

    content: Tensor
    position: Tensor


def unblock_fully_blocked_rows(attn_mask: Tensor) -> Tensor:
    """Let a query that is blocked from every pixel attend to all of them instead.

    attn_mask: `[N*heads, Q, h*w]` bool, True = blocked. Without this, softmax over a row
    of nothing but blocked keys is NaN.
    """
    return attn_mask & ~attn_mask.all(dim=-1, keepdim=True)


class FrameDecoder(nn.Module):
    """`VitaMultiScaleMaskedTransformerDecoder`: per-frame queries, masks and classes.

    Built from `config` plus `num_classes` (K), `in_channels` (channels of the
    multi-scale maps) and `mask_dim` (D, channels of the mask features).
    """

    def __init__(
        self, config: FrameDecoderConfig, num_classes: int, in_channels: int, mask_dim: int
    ):
        super().__init__()
        hidden = config.hidden_dim
        if hidden % 2:
            raise ValueError(f"hidden_dim must be even for the sine embedding, got {hidden}")
        if config.layers < 1:
            raise ValueError(f"the frame decoder needs at least 1 layer, got {config.layers}")
        if not 1 <= config.vita_last_layers <= config.layers:
            raise ValueError(
                f"vita_last_layers={config.vita_last_layers} must lie in [1, {config.layers}]"
            )
        self.num_layers = config.layers
        self.heads = config.heads
        self.in_channels = in_channels
        self.mask_dim = mask_dim
        self.vita_last_layers = config.vita_last_layers

        self.position_embedding = PositionEmbeddingSine(hidden // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden, config.heads, pre_norm=config.pre_norm)
            for _ in range(config.layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden, config.heads, pre_norm=config.pre_norm)
            for _ in range(config.layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden, config.ffn_dim, pre_norm=config.pre_norm) for _ in range(config.layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden)
        self.query_feat = nn.Embedding(config.num_queries, hidden)
        self.query_embed = nn.Embedding(config.num_queries, hidden)
        self.level_embed = nn.Embedding(FEATURE_LEVELS, hidden)
        self.input_proj = nn.ModuleList(
            _input_projection(in_channels, hidden, config.enforce_input_project)
            for _ in range(FEATURE_LEVELS)
        )
        self.class_embed = nn.Linear(hidden, num_classes + 1)
        self.mask_embed = MLP(hidden, hidden, mask_dim, MASK_EMBED_LAYERS)
        # Mask-piloted training's class embeddings (MP-Former's `label_enc`); None when off.
        self.pilot_label_embed = nn.Embedding(num_classes, hidden) if config.mask_piloting else None

    def forward(
        self,
        multi_scale_features: Sequence[Tensor],
        mask_features: Tensor,
        pilot: MaskPilot | None = None,
        initial: InitialQueries | None = None,
    ) -> FrameDecoderOutput:
        """multi_scale_features: 3 maps `[N, in_channels, h_l, w_l]`, low resolution first;
        mask_features: `[N, D, H, W]`; pilot: ground truth for mask-piloted training (the
        pilot queries run beside the Q learnable ones and never change their results'
        shapes; see `mask_pilot.py`); initial: queries that replace the learnable ones
        (a temporal head's propagated queries, `l2g.py`)."""
        self._check_inputs(multi_scale_features, mask_features)
        memory = self.memory(multi_scale_features)
        memories, memory_positions, level_sizes = memory.tokens, memory.positions, memory.sizes

        frames = mask_features.shape[0]
        if initial is None:
            query_pos = self.query_embed.weight.unsqueeze(1).expand(-1, frames, -1)  # [Q, N, C]
            queries = self.query_feat.weight.unsqueeze(1).expand(-1, frames, -1)  # [Q, N, C]
        else:
            queries, query_pos = initial.content, initial.position

        num_queries = queries.shape[0]
        self_attn_mask = None
        if pilot is not None:
            queries, query_pos = self._add_pilot_queries(pilot, queries, query_pos)
            self_attn_mask = pilot.self_attention_blocked(num_queries, self.heads)

        prediction, _ = self._predict(queries, mask_features)
        predictions = [prediction]
        normed_queries: list[Tensor] = []
        attn_mask = self._layer_mask(prediction, num_queries, pilot, level_sizes[0])
        for index in range(self.num_layers):
            level = index % FEATURE_LEVELS
            queries = self.transformer_cross_attention_layers[index](
                queries,
                memories[level],
                attn_mask=unblock_fully_blocked_rows(attn_mask),
                pos=memory_positions[level],
                query_pos=query_pos,
            )
            queries = self.transformer_self_attention_layers[index](
                queries, attn_mask=self_attn_mask, pos=query_pos
            )
            queries = self.transformer_ffn_layers[index](queries)
            prediction, normed = self._predict(queries, mask_features)
            predictions.append(prediction)
            normed_queries.append(normed[:, :num_queries])
            if index + 1 < self.num_layers:  # the last prediction restricts no further layer
                next_size = level_sizes[(index + 1) % FEATURE_LEVELS]
                attn_mask = self._layer_mask(prediction, num_queries, pilot, next_size)

        matching = [_query_slice(p, 0, num_queries) for p in predictions]
        pilots = [_query_slice(p, num_queries, None) for p in predictions] if pilot else []
        kept_layers = self.vita_last_layers if self.training else 1
        return FrameDecoderOutput(
            pred_logits=matching[-1].pred_logits,
            pred_masks=matching[-1].pred_masks,
            aux_outputs=tuple(matching[:-1]),
            frame_queries=torch.stack(normed_queries[-kept_layers:]),
            pilot_predictions=tuple(pilots),
        )

    def memory(self, multi_scale_features: Sequence[Tensor]) -> DecoderMemory:
        """The keys and values the layers attend: each map projected to C channels plus its
        level embedding, and its sine positions."""
        tokens, positions, sizes = [], [], []
        for level, feature in enumerate(multi_scale_features):
            sizes.append((feature.shape[-2], feature.shape[-1]))
            position = self.position_embedding(feature).to(feature.dtype)
            memory = self.input_proj[level](feature) + self.level_embed.weight[level][:, None, None]
            # [N, C, h, w] -> [h*w, N, C]: nn.MultiheadAttention is sequence-first
            tokens.append(memory.flatten(2).permute(2, 0, 1))
            positions.append(position.flatten(2).permute(2, 0, 1))
        return DecoderMemory(tuple(tokens), tuple(positions), tuple(sizes))

    def _add_pilot_queries(
        self, pilot: MaskPilot, queries: Tensor, query_pos: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Append the M pilot queries (class embedding, no position) to `[Q, N, C]`."""
        if self.pilot_label_embed is None:
            raise ValueError("this frame decoder was built without mask piloting")
        if pilot.valid.shape[0] != queries.shape[1]:
            raise ValueError(f"a pilot of {pilot.valid.shape[0]} frames for {queries.shape[1]}")
        content = self.pilot_label_embed(pilot.labels) * pilot.valid[..., None]  # [N, M, C]
        content = content.transpose(0, 1).to(queries.dtype)  # [M, N, C]
        return (
            torch.cat([queries, content]),
            torch.cat([query_pos, torch.zeros_like(content)]),
        )

    def _layer_mask(
        self,
        prediction: FramePrediction,
        num_queries: int,
        pilot: MaskPilot | None,
        size: tuple[int, int],
    ) -> Tensor:
        """The next layer's cross-attention mask: predicted masks for the matching queries,
        ground-truth masks for the pilot queries."""
        blocked = self._attention_mask(prediction.pred_masks[:, :num_queries], size)
        if pilot is None:
            return blocked
        return torch.cat([blocked, pilot.cross_attention_blocked(size, self.heads)], dim=1)

    def _predict(self, queries: Tensor, mask_features: Tensor) -> tuple[FramePrediction, Tensor]:
        """queries `[Q, N, C]` -> the prediction and the normed queries `[N, Q, C]`."""
        normed = self.decoder_norm(queries).transpose(0, 1)
        return self.predict_normed(normed, mask_features), normed

    def predict_normed(self, normed: Tensor, mask_features: Tensor) -> FramePrediction:
        """The class and mask heads: decoder-normed queries `[N, Q, C]` (the frame queries)
        and mask_features `[N, D, H, W]` -> class logits `[N, Q, K+1]`, mask logits
        `[N, Q, H, W]`."""
        mask_embedding = self.mask_embed(normed)  # [N, Q, D]
        mask_logits = torch.einsum("nqd,ndhw->nqhw", mask_embedding, mask_features)
        return FramePrediction(self.class_embed(normed), mask_logits)

    def _attention_mask(self, mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
        """mask_logits `[N, Q, H, W]` -> bool `[N*heads, Q, h*w]`, True where blocked.

        Rows are frame-major then head, the order nn.MultiheadAttention expects. No gradient
        flows through the mask, as in the official code.
        """
        blocked = self._attention_logits(mask_logits, size).sigmoid() < 0.5  # [N, Q, h*w]
        return blocked.unsqueeze(1).expand(-1, self.heads, -1, -1).flatten(0, 1)

    @staticmethod
    def _attention_logits(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
        """mask_logits `[N, Q, H, W]` resized to the attended level's `size` (h, w) and
        flattened, `[N, Q, h*w]`: what the attention mask thresholds at 0."""
        resized = F.interpolate(
            mask_logits.detach(), size=size, mode="bilinear", align_corners=False
        )
        return resized.flatten(2)

    def _check_inputs(self, multi_scale_features: Sequence[Tensor], mask_features: Tensor) -> None:
        if len(multi_scale_features) != FEATURE_LEVELS:
            raise ValueError(
                f"expected {FEATURE_LEVELS} feature maps, got {len(multi_scale_features)}"
            )
        if mask_features.dim() != 4 or mask_features.shape[1] != self.mask_dim:
            raise ValueError(
                f"mask_features must be [N, {self.mask_dim}, H, W], "
                f"got {tuple(mask_features.shape)}"
            )
        frames = mask_features.shape[0]
        for level, feature in enumerate(multi_scale_features):
            if feature.dim() != 4 or feature.shape[:2] != (frames, self.in_channels):
                raise ValueError(
                    f"feature map {level} must be [{frames}, {self.in_channels}, h, w], "
                    f"got {tuple(feature.shape)}"
                )


def _query_slice(prediction: FramePrediction, start: int, stop: int | None) -> FramePrediction:
    return FramePrediction(
        prediction.pred_logits[:, start:stop], prediction.pred_masks[:, start:stop]
    )


def _input_projection(in_channels: int, hidden: int, enforce: bool) -> nn.Module:
    """A 1x1 conv to `hidden` channels, or an empty Sequential (no keys) when none is needed."""
    if in_channels == hidden and not enforce:
        return nn.Sequential()
    conv = nn.Conv2d(in_channels, hidden, kernel_size=1)
    # detectron2's c2_xavier_fill: uniform Kaiming with a=1, zero bias.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return conv
