"""VITA: video instance segmentation via object token association.

Frame queries (the frame detector's post-`decoder_norm` query states, one set per frame)
are projected into object tokens, encoded over time with (shifted) window attention
(`temporal_encoder.py`), and read by a few video queries through cross-attention. Heads
give class logits, a mask embedding (dotted with per-frame mask features), and
similarity embeddings for frame and video queries.

Parameter names equal the official `VITA` module's keys below `vita_module.`, so
`Vita.load_state_dict(strip_prefix(official, "vita_module."), strict=True)` loads an
official checkpoint.

Dimension letters: L frame-decoder layers fed to VITA (3 in training, 1 in eval), B videos,
T frames, fQ frame queries per frame (fK of them after token pruning), cQ video queries,
C channels, K classes, H x W mask-feature size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vis_core.modeling.config import VitaConfig
from vis_core.modeling.layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from vis_core.modeling.temporal_encoder import encode_frame_tokens


@dataclass(frozen=True)
class VitaLayerPrediction:
    """Head outputs of one earlier decoder layer (deep supervision).

    pred_logits: `[L, B, cQ, K+1]` (no-object last); pred_mask_embed: `[L, B, cQ, C]`;
    pred_cq_embed: `[L, B, cQ, C]`, or None without `sim_use_clip`. The frame-query
    embedding of an earlier layer is the same tensor as `VitaOutput.pred_fq_embed`.
    """

    pred_logits: Tensor
    pred_mask_embed: Tensor
    pred_cq_embed: Tensor | None


@dataclass(frozen=True)
class VitaOutput:
    """What `Vita.forward` returns (same type in training and eval).

    - pred_logits `[L, B, cQ, K+1]`, pred_mask_embed `[L, B, cQ, C]`, pred_cq_embed
      `[L, B, cQ, C]` (None without `sim_use_clip`): heads on the last decoder layer.
    - pred_fq_embed `[L, B, T, fQ, C]`: `sim_embed_frame` of the encoded frame queries. With
      token pruning it is `[L, B, T, fK, C]`: slot k holds frame query
      `kept_frame_query_index[l, b, t, k]` (indices ascending); pruned queries have none.
    - kept_frame_query_index `[L, B, T, fK]` (int64): the frame queries kept by pruning, or
      None when every frame query was used.
    - aux_outputs: one `VitaLayerPrediction` per earlier decoder layer (D-1 of them) in
      training with `aux_loss`; empty otherwise.
    - encoder_layer_outputs `[L, B, T, fQ, C]` per encoder layer (after its FFN, real frames
      only) and decoder_layer_outputs `[L, B, cQ, C]` per decoder layer (before
      `decoder_norm`): only filled when `forward(..., return_layer_outputs=True)`.
    """

    pred_logits: Tensor
    pred_mask_embed: Tensor
    pred_cq_embed: Tensor | None
    pred_fq_embed: Tensor
    aux_outputs: tuple[VitaLayerPrediction, ...] = ()
    kept_frame_query_index: Tensor | None = None
    encoder_layer_outputs: tuple[Tensor, ...] = ()
    decoder_layer_outputs: tuple[Tensor, ...] = ()


def frame_foreground_probability(frame_logits: Tensor) -> Tensor:
    """`[..., K+1]` frame class logits (no-object last) -> `[...]` foreground probability."""
    return 1.0 - frame_logits.softmax(dim=-1)[..., -1]


def kept_token_count(num_frame_queries: int, keep_ratio: float) -> int:
    """`ceil(keep_ratio * fQ)`, at least 1 (rounded first so 0.3 * 10 keeps 3, not 4)."""
    return max(1, math.ceil(round(keep_ratio * num_frame_queries, 6)))


def _frames_batch_first(tokens: Tensor, layers: int) -> Tensor:
    """`[T, fQ, LB, C] -> [L, B, T, fQ, C]` (LB index `l * B + b`)."""
    return tokens.permute(2, 0, 1, 3).unflatten(0, (layers, -1))


class Vita(nn.Module):
    """The VITA module: frame queries `[L, B, T, fQ, C_in]` -> `VitaOutput`.

    Built from `VitaConfig` plus the sizes that come from the frame detector:
    `num_classes` (K), `num_frame_queries` (fQ, the frame decoder's query count),
    `frame_query_dim` (the frame decoder's hidden size), `mask_in_channels` (the pixel
    decoder's `conv_dim`, channels of its stride-4 `clip_mask_features`) and `mask_dim`.
    """

    def __init__(
        self,
        config: VitaConfig,
        num_classes: int,
        num_frame_queries: int,
        frame_query_dim: int,
        mask_in_channels: int,
        mask_dim: int,
    ):
        super().__init__()
        if config.window_size < 0:
            raise ValueError(f"window_size must be >= 0, got {config.window_size}")
        if not 0.0 < config.token_keep_ratio <= 1.0:
            raise ValueError(f"token_keep_ratio must be in (0, 1], got {config.token_keep_ratio}")
        if config.decoder_layers < 1:
            raise ValueError("VITA needs at least one decoder layer")
        self.config = config
        self.num_classes = num_classes
        self.num_frame_queries = num_frame_queries
        self.frame_query_dim = frame_query_dim
        hidden, heads, pre_norm = config.hidden_dim, config.heads, config.pre_norm

        self.enc_self_attn = nn.ModuleList(
            SelfAttentionLayer(hidden, heads, pre_norm=pre_norm)
            for _ in range(config.encoder_layers)
        )
        self.enc_ffn = nn.ModuleList(
            FFNLayer(hidden, config.ffn_dim, pre_norm=pre_norm)
            for _ in range(config.encoder_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden, heads, pre_norm=pre_norm)
            for _ in range(config.decoder_layers)
        )
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden, heads, pre_norm=pre_norm)
            for _ in range(config.decoder_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden, config.ffn_dim, pre_norm=pre_norm)
            for _ in range(config.decoder_layers)
        )
        self.vita_mask_features = nn.Conv2d(mask_in_channels, mask_dim, kernel_size=1)
        # detectron2's c2_xavier_fill, as the official conv is initialised.
        nn.init.kaiming_uniform_(self.vita_mask_features.weight, a=1)
        nn.init.zeros_(self.vita_mask_features.bias)
        self.decoder_norm = nn.LayerNorm(hidden)
        self.query_feat = nn.Embedding(config.num_queries, hidden)
        self.query_embed = nn.Embedding(config.num_queries, hidden)
        self.fq_pos = nn.Embedding(num_frame_queries, hidden)
        needs_projection = config.enforce_input_project or frame_query_dim != hidden
        self.input_proj_dec = (
            nn.Linear(frame_query_dim, hidden) if needs_projection else nn.Identity()
        )
        self.src_embed = nn.Identity()  # official: object tokens enter the decoder unchanged
        self.class_embed = nn.Linear(hidden, num_classes + 1)
        self.mask_embed = MLP(hidden, hidden, mask_dim, 3)
        self.sim_embed_frame = nn.Linear(hidden, hidden)
        self.sim_embed_clip = nn.Linear(hidden, hidden) if config.sim_use_clip else None

    def forward(
        self,
        frame_queries: Tensor,
        frame_fg_prob: Tensor | None = None,
        *,
        return_layer_outputs: bool = False,
    ) -> VitaOutput:
        """frame_queries `[L, B, T, fQ, C_in]` -> `VitaOutput`.

        In eval mode only the last frame-decoder layer is used (`frame_queries[-1:]`, as the
        official code does), so every output has L = 1. In training every L is an
        independent entry (the official L*B batch). Shifted windows run only in eval.

        frame_fg_prob `[L, B, T, fQ]`: foreground probability of each frame query (see
        `frame_foreground_probability`). With `config.token_keep_ratio < 1` it is required,
        and each frame keeps its `kept_token_count(fQ, ratio)` most likely foreground
        queries, each with its own `fq_pos` embedding; with ratio 1 it is ignored.
        """
        self._check_inputs(frame_queries, frame_fg_prob)
        if not self.training:
            frame_queries = frame_queries[-1:]
            frame_fg_prob = None if frame_fg_prob is None else frame_fg_prob[-1:]
        layers, batch = frame_queries.shape[:2]

        kept_index = None
        if frame_fg_prob is not None and self.config.token_keep_ratio < 1.0:
            frame_queries, kept_index = self._prune(frame_queries, frame_fg_prob)
            memory_pos = self.fq_pos.weight[kept_index]  # [L, B, T, fK, C]
        else:
            memory_pos = self.fq_pos.weight.expand(*frame_queries.shape[:3], -1, -1)

        tokens = self.input_proj_dec(frame_queries).flatten(0, 1)  # [LB, T, fQ, C]
        encoder_outputs: list[Tensor] | None = [] if return_layer_outputs else None
        encoded = encode_frame_tokens(
            tokens.permute(1, 2, 0, 3),  # [T, fQ, LB, C]
            self.enc_self_attn,
            self.enc_ffn,
            self.config.window_size,
            shift_odd_layers=not self.training,
            layer_outputs=encoder_outputs,
        )
        pred_fq_embed = _frames_batch_first(self.sim_embed_frame(encoded), layers)

        memory = self.src_embed(encoded.flatten(0, 1))  # [T*fQ, LB, C]
        memory_pos = memory_pos.flatten(0, 1).permute(1, 2, 0, 3).flatten(0, 1)  # [T*fQ, LB, C]
        normed, decoder_outputs = self._decode(memory, memory_pos, layers * batch)
        normed = normed.unflatten(1, (layers, batch))  # [D', L, B, cQ, C]

        pred_logits = self.class_embed(normed)
        pred_mask_embed = self.mask_embed(normed)
        pred_cq_embed = None if self.sim_embed_clip is None else self.sim_embed_clip(normed)
        aux_outputs = tuple(
            VitaLayerPrediction(
                pred_logits=pred_logits[index],
                pred_mask_embed=pred_mask_embed[index],
                pred_cq_embed=None if pred_cq_embed is None else pred_cq_embed[index],
            )
            for index in range(len(normed) - 1)
        )
        return VitaOutput(
            pred_logits=pred_logits[-1],
            pred_mask_embed=pred_mask_embed[-1],
            pred_cq_embed=None if pred_cq_embed is None else pred_cq_embed[-1],
            pred_fq_embed=pred_fq_embed,
            aux_outputs=aux_outputs,
            kept_frame_query_index=kept_index,
            encoder_layer_outputs=tuple(
                _frames_batch_first(output, layers) for output in encoder_outputs or ()
            ),
            decoder_layer_outputs=tuple(
                output.transpose(0, 1).unflatten(0, (layers, batch))  # [L, B, cQ, C]
                for output in (decoder_outputs if return_layer_outputs else ())
            ),
        )

    def _decode(
        self, memory: Tensor, memory_pos: Tensor, sequences: int
    ) -> tuple[Tensor, list[Tensor]]:
        """Video queries read the object tokens.

        memory, memory_pos: `[T*fQ, LB, C]`. Returns `(normed [D', LB, cQ, C], raw)`, where
        `normed` holds `decoder_norm` of every layer in training with aux loss, else of the
        last layer only, and `raw` lists each layer's output `[cQ, LB, C]` before the norm.
        """
        query_pos = self.query_embed.weight[:, None].expand(-1, sequences, -1)  # [cQ, LB, C]
        queries = self.query_feat.weight[:, None].expand(-1, sequences, -1)
        predict_every_layer = self.training and self.config.aux_loss
        last = len(self.transformer_ffn_layers) - 1
        normed: list[Tensor] = []
        raw: list[Tensor] = []
        for index, (cross_attn, self_attn, ffn) in enumerate(
            zip(
                self.transformer_cross_attention_layers,
                self.transformer_self_attention_layers,
                self.transformer_ffn_layers,
                strict=True,
            )
        ):
            queries = cross_attn(queries, memory, pos=memory_pos, query_pos=query_pos)
            queries = self_attn(queries, pos=query_pos)
            queries = ffn(queries)
            raw.append(queries)
            if predict_every_layer or index == last:
                normed.append(self.decoder_norm(queries).transpose(0, 1))  # [LB, cQ, C]
        return torch.stack(normed), raw

    def _prune(self, frame_queries: Tensor, frame_fg_prob: Tensor) -> tuple[Tensor, Tensor]:
        """Keep each frame's most likely foreground queries.

        frame_queries `[L, B, T, fQ, C]`, frame_fg_prob `[L, B, T, fQ]` ->
        (kept queries `[L, B, T, fK, C]`, kept indices `[L, B, T, fK]`, ascending so the
        kept tokens stay in their original slot order).
        """
        keep = kept_token_count(frame_queries.shape[3], self.config.token_keep_ratio)
        kept_index = frame_fg_prob.topk(keep, dim=-1).indices.sort(dim=-1).values
        gather_index = kept_index[..., None].expand(-1, -1, -1, -1, frame_queries.shape[-1])
        return frame_queries.gather(3, gather_index), kept_index

    def _check_inputs(self, frame_queries: Tensor, frame_fg_prob: Tensor | None) -> None:
        if frame_queries.dim() != 5:
            raise ValueError(
                f"frame_queries must be [L, B, T, fQ, C], got shape {tuple(frame_queries.shape)}"
            )
        expected = (self.num_frame_queries, self.frame_query_dim)
        if tuple(frame_queries.shape[3:]) != expected:
            raise ValueError(
                f"frame_queries must have fQ, C = {expected}, got {tuple(frame_queries.shape[3:])}"
            )
        if frame_queries.shape[2] < 1:
            raise ValueError("frame_queries has no frames")
        if frame_fg_prob is not None and frame_fg_prob.shape != frame_queries.shape[:4]:
            raise ValueError(
                f"frame_fg_prob must be [L, B, T, fQ] = {tuple(frame_queries.shape[:4])}, "
                f"got {tuple(frame_fg_prob.shape)}"
            )
        if self.config.token_keep_ratio < 1.0 and frame_fg_prob is None:
            raise ValueError(
                f"token_keep_ratio {self.config.token_keep_ratio} < 1 prunes frame queries by "
                "foreground probability: pass frame_fg_prob [L, B, T, fQ]"
            )

    def project_mask_features(self, clip_mask_features: Tensor) -> Tensor:
        """The `vita_mask_features` 1x1 conv: `[N, C_in, H, W] -> [N, C, H, W]` (N frames).

        `clip_mask_features` is the pixel decoder's stride-4 map before its own
        `mask_features` conv.
        """
        return self.vita_mask_features(clip_mask_features)

    @staticmethod
    def clip_mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
        """Training masks: `[L, B, cQ, C]` x `[B, T, C, H, W]` -> `[L, B, cQ, T, H, W]`."""
        return torch.einsum("lbqc,btchw->lbqthw", mask_embed, mask_features)

    @staticmethod
    def video_mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
        """One video's masks: `[cQ, C]` x `[T, C, H, W]` -> `[cQ, T, H, W]`.

        T may be any chunk of the video's frames (inference computes masks chunk by chunk).
        """
        return torch.einsum("qc,tchw->qthw", mask_embed, mask_features)
