"""Local2Global query propagation on the frame detector (reference section 3).

L2G runs the detector's own frame decoder once per frame, not from its learnable queries
but from the previous frame's output queries (the "global" queries), so query i stands
for the same object the whole video: identity is the query index. Before the decoder
runs, the L2G aligner re-aligns the global queries to the current frame:

1. local queries: the Q tokens of the maps the decoder attends (projected to C, plus level
   embedding) that a token class head ranks highest, each `LayerNorm(Linear(token + its
   sine position))`; our FPN pixel decoder has no encoder to put position into its
   tokens, so the decoder's own sine position is added before the projection;
2. g_pos: `MLP(sine(box))` of each global query's mask box in the previous frame (Eq. 2);
   l_pos: a static learnable embedding per local-query rank (Table 6);
3. the aligner: post-norm layers of self-attention among the global queries (position
   g_pos), cross-attention to the local queries (keys with l_pos), FFN (Eq. 3);
4. the frame decoder from the aligned queries, with g_pos as its query position in every
   layer; its last layer's decoder-normed queries and mask boxes go to the next frame.

Before the first frame the global queries are learnable embeddings and each one's box is
the cell of the local token of its rank (the paper's COCO phase; reference 3.3).
The state between frames is the Q queries and Q boxes: no memory bank.

Dimension letters: B videos (clips), T frames, Q queries (the detector's), C channels,
K classes, S tokens of a frame over the three attended maps, h x w the mask grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vis_core.modeling.boxes import mask_to_box
from vis_core.modeling.config import ModelConfig
from vis_core.modeling.frame_decoder import FrameDecoder, FramePrediction, InitialQueries
from vis_core.modeling.frame_detector import FrameDetections
from vis_core.modeling.head_config import L2gConfig
from vis_core.modeling.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    box_sine_embedding,
)

# RetinaNet's prior for a sigmoid focal head: every token starts as 1% likely an object.
_TOKEN_PRIOR = 0.01


@dataclass(frozen=True)
class L2gState:
    """What a frame hands the next, per video: queries `[B, Q, C]` (q_global: the frame
    decoder's last layer after `decoder_norm`) and boxes `[B, Q, 4]` (normalised cx, cy,
    w, h of their masks, logit > 0; no gradient)."""

    queries: Tensor
    boxes: Tensor


@dataclass(frozen=True)
class L2gFrame:
    """The head on one frame of B videos.

    predictions: the frame decoder's `layers + 1` predictions, final last (pred_logits
        `[B, Q, K+1]`, pred_masks `[B, Q, h, w]`); query i of every frame is track i.
    token_logits `[B, S, K]`: the token class head on the attended maps' tokens, level by
        level (coarse first), row-major; token_sizes: each level's (h_l, w_l).
    state: the next frame's input.
    """

    predictions: tuple[FramePrediction, ...]
    token_logits: Tensor
    token_sizes: tuple[tuple[int, int], ...]
    state: L2gState


@dataclass(frozen=True)
class L2gOutput:
    """The head over B clips of T frames (training): predictions as `L2gFrame`'s with
    leading `[B, T]`, token_logits `[B, T, S, K]`, token_sizes."""

    predictions: tuple[FramePrediction, ...]
    token_logits: Tensor
    token_sizes: tuple[tuple[int, int], ...]


class L2gAligner(nn.Module):
    """The L2G aligner: global queries attend to each other, then to the local queries."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int):
        super().__init__()
        self.self_attention = nn.ModuleList(SelfAttentionLayer(dim, heads) for _ in range(layers))
        self.cross_attention = nn.ModuleList(CrossAttentionLayer(dim, heads) for _ in range(layers))
        self.ffn = nn.ModuleList(FFNLayer(dim, ffn_dim) for _ in range(layers))

    def forward(
        self, queries: Tensor, query_pos: Tensor, local: Tensor, local_pos: Tensor
    ) -> Tensor:
        """queries, query_pos `[Q, B, C]`; local, local_pos `[Ql, B, C]` -> `[Q, B, C]`."""
        for self_attention, cross_attention, ffn in zip(
            self.self_attention, self.cross_attention, self.ffn, strict=True
        ):
            queries = self_attention(queries, pos=query_pos)
            queries = cross_attention(queries, local, pos=local_pos, query_pos=query_pos)
            queries = ffn(queries)
        return queries


class L2gHead(nn.Module):
    """Local queries, g_pos, the aligner and the first frame's queries (module docstring).

    The frame decoder it drives is the detector's, passed to each call, so the head holds
    no copy of it and trains on a frozen detector (the paper's phase 1).
    """

    def __init__(
        self,
        config: L2gConfig,
        hidden_dim: int,
        num_queries: int,
        num_classes: int,
        decoder_heads: int = 8,
    ):
        super().__init__()
        if hidden_dim % 4:
            raise ValueError(f"the box embedding needs hidden_dim % 4 == 0, got {hidden_dim}")
        self.config = config
        self.num_queries = num_queries
        self.num_classes = num_classes
        heads = config.aligner_heads or decoder_heads
        ffn_dim = config.aligner_ffn_dim or 4 * hidden_dim
        self.token_class = nn.Linear(hidden_dim, num_classes)
        nn.init.constant_(self.token_class.bias, -math.log((1 - _TOKEN_PRIOR) / _TOKEN_PRIOR))
        self.local_proj = nn.Linear(hidden_dim, hidden_dim)
        self.local_norm = nn.LayerNorm(hidden_dim)
        self.local_pos = nn.Embedding(num_queries, hidden_dim)  # l_pos, by token rank
        self.initial_queries = nn.Embedding(num_queries, hidden_dim)  # q_global at frame 0
        self.box_embed = MLP(2 * hidden_dim, hidden_dim, hidden_dim, config.box_embed_layers)
        self.aligner = L2gAligner(hidden_dim, heads, ffn_dim, config.aligner_layers)

    @classmethod
    def for_model(cls, config: ModelConfig) -> L2gHead:
        """The head of `config.l2g` on the frame decoder of `config`."""
        if config.l2g is None:
            raise ValueError(f"model config {config.name} has no L2G head")
        decoder = config.frame_decoder
        return cls(
            config.l2g, decoder.hidden_dim, decoder.num_queries, config.num_classes, decoder.heads
        )

    def forward(
        self,
        decoder: FrameDecoder,
        maps: Sequence[Tensor],
        mask_features: Tensor,
        previous: L2gState | None = None,
    ) -> L2gFrame:
        """One frame of B videos: maps, the three attended maps `[B, C_in, h_l, w_l]`
        (coarse first); mask_features `[B, D, h, w]`; previous: the state the previous
        frame left, None at a video's first frame."""
        memory = decoder.memory(maps)
        content = torch.cat(memory.tokens)  # [S, B, C]
        token_logits = self.token_class(content).transpose(0, 1)  # [B, S, K]
        ranked = rank_tokens(token_logits, self.num_queries)  # [B, Q]
        tokens = (content + torch.cat(memory.positions)).transpose(0, 1)  # [B, S, C]
        chosen = tokens.gather(1, ranked[..., None].expand(-1, -1, tokens.shape[-1]))
        local = self.local_norm(self.local_proj(chosen)).transpose(0, 1)  # [Q, B, C]
        batch = local.shape[1]
        local_pos = self.local_pos.weight[:, None].expand(-1, batch, -1)
        if previous is None:
            queries = self.initial_queries.weight[:, None].expand(-1, batch, -1)
            boxes = token_boxes(memory.sizes, local.device)[ranked]  # [B, Q, 4]
        else:
            queries, boxes = previous.queries.transpose(0, 1), previous.boxes
        width = queries.shape[-1]
        query_pos = self.box_embed(box_sine_embedding(boxes, width // 2).to(queries.dtype))
        query_pos = query_pos.transpose(0, 1)  # [Q, B, C]
        aligned = self.aligner(queries, query_pos, local, local_pos)
        decoded = decoder(maps, mask_features, initial=InitialQueries(aligned, query_pos))
        state = L2gState(
            queries=decoded.frame_queries[-1],
            boxes=mask_to_box(decoded.pred_masks.detach() > 0),
        )
        return L2gFrame(decoded.predictions, token_logits, memory.sizes, state)

    def over_clips(
        self, decoder: FrameDecoder, detections: FrameDetections, batch: int, frames: int
    ) -> L2gOutput:
        """The head through B clips of T frames in order, from the detector's output on
        them (clip-major); gradients flow through the propagated queries (reference 3.3)."""
        if not detections.attended_maps or detections.decoder_mask_features is None:
            raise ValueError("the L2G head needs the detector's attended maps and mask features")
        maps = [level.unflatten(0, (batch, frames)) for level in detections.attended_maps]
        features = detections.decoder_mask_features.unflatten(0, (batch, frames))
        state, steps = None, []
        for t in range(frames):
            step = self(decoder, [level[:, t] for level in maps], features[:, t], state)
            steps.append(step)
            state = step.state
        predictions = tuple(
            FramePrediction(
                pred_logits=torch.stack([s.predictions[i].pred_logits for s in steps], dim=1),
                pred_masks=torch.stack([s.predictions[i].pred_masks for s in steps], dim=1),
            )
            for i in range(len(steps[0].predictions))
        )
        token_logits = torch.stack([step.token_logits for step in steps], dim=1)
        return L2gOutput(predictions, token_logits, steps[0].token_sizes)


def rank_tokens(token_logits: Tensor, count: int) -> Tensor:
    """`[B, S, K]` -> the `count` best tokens `[B, count]` by largest class probability,
    best first; with fewer than `count` tokens (tiny frames) the ranking repeats."""
    scores = token_logits.detach().float().sigmoid().amax(dim=-1)  # [B, S]
    available = min(count, scores.shape[1])
    ranked = scores.topk(available, dim=1).indices
    return ranked[:, torch.arange(count, device=ranked.device) % available]


def token_boxes(sizes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
    """The cell of every token as a normalised box `[S, 4]` (cx, cy, w, h), in token order."""
    boxes = []
    for height, width in sizes:
        rows, cols = torch.meshgrid(
            torch.arange(height, device=device, dtype=torch.float32),
            torch.arange(width, device=device, dtype=torch.float32),
            indexing="ij",
        )
        size = torch.tensor([1.0 / width, 1.0 / height], device=device).expand(height * width, 2)
        centers = torch.stack(((cols + 0.5) / width, (rows + 0.5) / height), dim=-1)
        boxes.append(torch.cat((centers.reshape(-1, 2), size), dim=1))
    return torch.cat(boxes)
