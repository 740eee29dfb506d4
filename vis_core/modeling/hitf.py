"""Hybrid instance-aware temporal fusion (HF) on the frame detector (reference section 2).

HF describes each frame twice: an instance code of slots (one per potential instance)
and a pixel map. Inter-frame attention lets the current frame's code and pixels read the
codes and pixels of the R previous frames; intra-frame attention links the frame's own
code and pixels; a class head and a dynamic-filter mask head then predict every slot,
its masks competing per pixel (softmax over the slots). Identity is the slot index, so
there is no embedding and no association step (`vis_core/inference/slot_identity.py`).

On our detector (reference 2.2 table):
- code: the last decoder layer's frame queries Q_t, one slot per query (L = Q);
- pixel map: the stride-4 mask features F_t average-pooled to `pixel_stride` (16), then
  a linear map to C. The pixel decoder's own stride-16 map would need the detector's
  output to carry it; F_t already mixes it in (the FPN's top-down sum);
- references: the raw code and pixel map of the R previous frames, never a fused
  output, so nothing recurs and a clip's frames run as one batch. The first frames of a
  video repeat the earliest frame (frame 0 is its own reference);
- M_alt blocks of (inter: Eq. 3-4, intra: Eq. 1-2, then an FFN on each stream), post-norm,
  the detector's width, heads and FFN size; within a step the code and pixel updates read
  the same inputs (in parallel);
- positions: a learnable slot embedding on codes [default: the paper's "learnable
  ViT-style" encodings], the detector's 2-D sine embedding on pixels, and a learnable
  temporal embedding on both (0 the target frame, delta the reference delta frames back);
- class head: Linear C -> C, ReLU, Linear C -> K+1; mask head: filters theta = 2 FC on the
  code, pixels f_out = F_t + up(Linear(f')), mask logits theta . f_out (Eq. 5).

The head reads nothing the detector does not already give (frame queries and stride-4
mask features), so it trains on a frozen detector.

Dimension letters: B clips, T frames of a clip, n frames of a batch, R references,
Q slots (frame queries), C channels, D mask-feature channels, K classes, h x w the
stride-4 grid, p x q the pixel map's grid (`pixel_stride`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vis_core.modeling.config import ModelConfig
from vis_core.modeling.head_config import HitfConfig
from vis_core.modeling.layers import MLP, CrossAttentionLayer, FFNLayer, PositionEmbeddingSine


@dataclass(frozen=True)
class HitfFrames:
    """What HF reads of n frames, and what its online memory keeps of the last R.

    codes `[n, Q, C]`: the frame queries; pixels `[n, C, p, q]`: the pooled, projected
    pixel maps.
    """

    codes: Tensor
    pixels: Tensor

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getitem__(self, index: Tensor | slice) -> HitfFrames:
        """The frames at `index` (a slice, or int64 indices of any shape `[...]`, giving
        `[..., Q, C]` and `[..., C, p, q]`)."""
        return HitfFrames(self.codes[index], self.pixels[index])

    @staticmethod
    def cat(parts: list[HitfFrames]) -> HitfFrames:
        return HitfFrames(
            torch.cat([part.codes for part in parts]), torch.cat([part.pixels for part in parts])
        )


@dataclass(frozen=True)
class HitfOutput:
    """HF's prediction for every slot of every frame (leading dimensions `[...]`: `[B, T]`
    from the model, `[n]` from `HitfHead.fuse`).

    class_logits `[..., Q, K+1]` (no-object last); mask_logits `[..., Q, h, w]`: logits of
    the softmax over the Q slots (dim -3), at the stride-4 grid.
    """

    class_logits: Tensor
    mask_logits: Tensor


def reference_index(first: int, count: int, references: int) -> Tensor:
    """`[count, R]` int64: for frames `first .. first + count - 1` of a sequence, the
    positions of their R previous frames, delta = 1..R back, clamped at position 0 (so
    the earliest frame stands in for missing ones and frame 0 is its own reference)."""
    frames = torch.arange(first, first + count)[:, None]
    back = torch.arange(1, references + 1)[None, :]
    return (frames - back).clamp(min=0)


@dataclass(frozen=True)
class HitfPositions:
    """Position embeddings, sequence-first and broadcast over the n frames: codes `[Q, 1, C]`,
    pixels `[P, 1, C]`, ref_codes `[R*Q, 1, C]`, ref_pixels `[R*P, 1, C]`."""

    codes: Tensor
    pixels: Tensor
    ref_codes: Tensor
    ref_pixels: Tensor


class FusionBlock(nn.Module):
    """One alternation: inter-frame attention (Eq. 3, 4), intra-frame attention (Eq. 1, 2),
    then an FFN on each stream. Tensors are sequence-first: codes `[Q, n, C]`, pixels
    `[P, n, C]` (P = p*q), references `[R*Q, n, C]` and `[R*P, n, C]`."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, reference_pixels: bool):
        super().__init__()
        self.reference_pixels = reference_pixels
        self.inter_code = CrossAttentionLayer(dim, heads)  # c2c & c2p to the references
        self.inter_pixel = CrossAttentionLayer(dim, heads)  # p2c to the reference codes
        self.intra_code = CrossAttentionLayer(dim, heads)  # c2c & c2p within the frame
        self.intra_pixel = CrossAttentionLayer(dim, heads)  # p2c within the frame
        self.code_ffn = FFNLayer(dim, ffn_dim)
        self.pixel_ffn = FFNLayer(dim, ffn_dim)

    def forward(
        self,
        codes: Tensor,
        pixels: Tensor,
        ref_codes: Tensor,
        ref_pixels: Tensor,
        pos: HitfPositions,
    ) -> tuple[Tensor, Tensor]:
        if self.reference_pixels:
            memory = torch.cat((ref_codes, ref_pixels))
            memory_pos = torch.cat((pos.ref_codes, pos.ref_pixels))
        else:
            memory, memory_pos = ref_codes, pos.ref_codes
        # Inter-frame: both streams read the references only, so the order is immaterial.
        codes, pixels = (
            self.inter_code(codes, memory, pos=memory_pos, query_pos=pos.codes),
            self.inter_pixel(pixels, ref_codes, pos=pos.ref_codes, query_pos=pos.pixels),
        )
        # Intra-frame, in parallel from the same inputs (reference 2.6).
        own = torch.cat((codes, pixels))
        own_pos = torch.cat((pos.codes, pos.pixels))
        codes, pixels = (
            self.intra_code(codes, own, pos=own_pos, query_pos=pos.codes),
            self.intra_pixel(pixels, codes, pos=pos.codes, query_pos=pos.pixels),
        )
        return self.code_ffn(codes), self.pixel_ffn(pixels)


class HitfHead(nn.Module):
    """HF's fusion blocks and prediction heads (module docstring).

    Built from `config`, the frame queries' width C, `mask_channels` D (the detector's
    stride-4 mask features), `heads`, `ffn_dim`, `num_queries` Q and `num_classes` K.
    """

    def __init__(
        self,
        config: HitfConfig,
        dim: int,
        mask_channels: int,
        heads: int,
        ffn_dim: int,
        num_queries: int,
        num_classes: int,
    ):
        super().__init__()
        if dim % 2:
            raise ValueError(f"the channels must be even for the sine embedding, got {dim}")
        self.config = config
        self.num_queries = num_queries
        self.num_classes = num_classes
        self.pixel_input = nn.Linear(mask_channels, dim)
        self.slot_embed = nn.Embedding(num_queries, dim)
        self.time_embed = nn.Embedding(config.references + 1, dim)
        self.position_embedding = PositionEmbeddingSine(dim // 2, normalize=True)
        self.blocks = nn.ModuleList(
            FusionBlock(dim, heads, ffn_dim, config.reference_pixels) for _ in range(config.blocks)
        )
        self.class_head = MLP(dim, dim, num_classes + 1, 2)
        self.mask_filter = MLP(dim, dim, mask_channels, 2)
        self.pixel_output = nn.Linear(dim, mask_channels)

    @classmethod
    def for_model(cls, config: ModelConfig) -> HitfHead:
        """The head of `config.hitf` on the detector of `config`."""
        if config.hitf is None:
            raise ValueError(f"model config {config.name} has no HF head")
        decoder = config.frame_decoder
        return cls(
            config.hitf,
            dim=decoder.hidden_dim,
            mask_channels=config.pixel_decoder.conv_dim,
            heads=decoder.heads,
            ffn_dim=decoder.ffn_dim,
            num_queries=decoder.num_queries,
            num_classes=config.num_classes,
        )

    def read(self, frame_queries: Tensor, mask_features: Tensor) -> HitfFrames:
        """frame_queries `[n, Q, C]`, mask_features `[n, D, h, w]` -> `HitfFrames`."""
        pooled = F.avg_pool2d(mask_features, self.config.pixel_stride // 4, ceil_mode=True)
        # [n, D, p, q] -> [n, p, q, D] -> Linear -> [n, C, p, q]
        pixels = self.pixel_input(pooled.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return HitfFrames(codes=frame_queries, pixels=pixels)

    def forward(self, frame_queries: Tensor, mask_features: Tensor) -> HitfOutput:
        """Training and offline use: B clips of T frames, each frame with the R previous
        frames of its clip as references. frame_queries `[B, T, Q, C]`, mask_features
        `[B, T, D, h, w]` -> `HitfOutput` with leading `[B, T]`."""
        batch, frames = frame_queries.shape[:2]
        inputs = self.read(frame_queries.flatten(0, 1), mask_features.flatten(0, 1))
        index = reference_index(0, frames, self.config.references).to(frame_queries.device)
        # Each clip's frames index its own: [B, T, R] positions in the B*T frames.
        offsets = torch.arange(batch, device=index.device)[:, None, None] * frames
        references = inputs[(index[None] + offsets).flatten(0, 1)]  # [B*T, R, ...]
        output = self.fuse(inputs, references, mask_features.flatten(0, 1))
        return HitfOutput(
            class_logits=output.class_logits.unflatten(0, (batch, frames)),
            mask_logits=output.mask_logits.unflatten(0, (batch, frames)),
        )

    def fuse(
        self, targets: HitfFrames, references: HitfFrames, mask_features: Tensor
    ) -> HitfOutput:
        """n target frames with their references (codes `[n, R, Q, C]`, pixels
        `[n, R, C, p, q]`, delta = 1..R back) and stride-4 mask features `[n, D, h, w]`
        -> `HitfOutput` with leading `[n]`."""
        slots = targets.codes.shape[1]
        grid = targets.pixels.shape[-2:]
        pos = self._positions(slots, grid, targets.codes)
        codes = targets.codes.transpose(0, 1)  # [Q, n, C]
        pixels = targets.pixels.flatten(2).permute(2, 0, 1)  # [n, C, p, q] -> [P, n, C]
        ref_codes = references.codes.flatten(1, 2).transpose(0, 1)  # [R*Q, n, C]
        # [n, R, C, p, q] -> [n, R, C, P] -> [R, P, n, C] -> [R*P, n, C]
        ref_pixels = references.pixels.flatten(3).permute(1, 3, 0, 2).flatten(0, 1)
        for block in self.blocks:
            codes, pixels = block(codes, pixels, ref_codes, ref_pixels, pos)
        codes = codes.transpose(0, 1)  # [n, Q, C]
        # [P, n, C] -> [n, P, D] -> [n, D, p, q], up to the stride-4 grid.
        pixel_out = self.pixel_output(pixels.transpose(0, 1)).transpose(1, 2)
        pixel_out = pixel_out.unflatten(2, tuple(grid))
        size = mask_features.shape[-2:]
        upsampled = F.interpolate(pixel_out, size=size, mode="bilinear", align_corners=False)
        pixel_features = mask_features + upsampled  # [n, D, h, w]
        filters = self.mask_filter(codes)  # [n, Q, D]
        return HitfOutput(
            class_logits=self.class_head(codes),
            mask_logits=torch.einsum("nqd,ndhw->nqhw", filters, pixel_features),
        )

    def _positions(self, slots: int, grid: torch.Size, like: Tensor) -> HitfPositions:
        """The position embeddings of a frame's Q slots and p x q pixels (`HitfPositions`)."""
        references = self.config.references
        time = self.time_embed.weight.to(like.dtype)  # [R+1, C]: 0 the target, delta back
        slot = self.slot_embed.weight[:slots].to(like.dtype)  # [Q, C]
        sine = self.position_embedding(like.new_zeros(1, 1, *grid)).to(like.dtype)
        sine = sine.flatten(2)[0].T  # [1, C, p, q] -> [P, C]
        ref_time = time[1 : references + 1, None, :]  # [R, 1, C]
        return HitfPositions(
            codes=(slot + time[0])[:, None],
            pixels=(sine + time[0])[:, None],
            ref_codes=(slot[None] + ref_time).flatten(0, 1)[:, None],
            ref_pixels=(sine[None] + ref_time).flatten(0, 1)[:, None],
        )
