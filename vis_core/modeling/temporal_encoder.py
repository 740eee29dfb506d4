"""VITA's temporal encoder: self-attention over object tokens, in (shifted) windows of frames.

The layers themselves (`SelfAttentionLayer`, `FFNLayer`) belong to the `Vita` module so
that their parameters keep the official keys `enc_self_attn.{i}` / `enc_ffn.{i}`; this
file holds the parameter-free part: padding, window layout, masks and the layer schedule.

Tokens travel sequence-first, `[T, Q, N, C]`: T frames, Q tokens per frame (frame
queries), N independent sequences (the official `L*B`), C channels. Inside a window the
token order is frame-major, `w * Q + q`, as in the official code.

The official schedule (`encode_frame_query` in VITA):
- `window_size == 0`: every layer attends over all `T * Q` tokens, no padding, no mask.
- `window_size == W > 0`: T is zero-padded to a multiple of W. Layer i uses plain windows
  when `not shift_odd_layers or i % 2 == 0` (a boolean key-padding mask hides padded
  frames), and otherwise shifted windows: frames rolled by `+ceil(W/2)`, window attention
  with an additive `-1000` mask, rolled back. Training never shifts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from vis_core.modeling.layers import FFNLayer, SelfAttentionLayer

# The official shifted-window mask is additive with this value, not -inf: a padded frame's
# query row is blocked entirely, and -1000 keeps its softmax finite (uniform) instead of NaN.
SHIFTED_WINDOW_BLOCKED = -1000.0


def window_shift(window_size: int) -> int:
    """Frames the shifted windows are rolled by: `ceil(W / 2)`."""
    return math.ceil(window_size / 2)


def pad_to_window_multiple(tokens: Tensor, window_size: int) -> tuple[Tensor, Tensor]:
    """Zero-pad the frames up to a multiple of the window.

    tokens: `[T, Q, N, C]`. Returns `(padded [Tp, Q, N, C], frame_is_padding [Tp] bool)`
    with `Tp = ceil(T / W) * W` and the padded frames last.
    """
    if window_size <= 0:
        raise ValueError(f"window_size must be positive to pad, got {window_size}")
    num_frames = tokens.shape[0]
    padded_frames = math.ceil(num_frames / window_size) * window_size
    padded = F.pad(tokens, (0, 0, 0, 0, 0, 0, 0, padded_frames - num_frames))
    frame_is_padding = torch.arange(padded_frames, device=tokens.device) >= num_frames
    return padded, frame_is_padding


def plain_window_key_padding(
    frame_is_padding: Tensor, window_size: int, tokens_per_frame: int, num_sequences: int
) -> Tensor | None:
    """Key-padding mask of the plain windows, or None when no frame is padding.

    frame_is_padding: `[Tp]`. Returns `[Nw * N, W * Q]` bool, True on padded frames' tokens;
    the batch index is `n * N + s` (window n, sequence s), as in `_to_windows`.
    """
    if not bool(frame_is_padding.any()):
        return None
    per_window = frame_is_padding.view(-1, window_size).repeat_interleave(tokens_per_frame, dim=1)
    return per_window.repeat_interleave(num_sequences, dim=0)


def shifted_window_blocked_pairs(frame_is_padding: Tensor, window_size: int) -> Tensor:
    """Which frame pairs may not attend inside each shifted window (official rule).

    frame_is_padding: `[Tp]`, in unrolled order. Returns `[Nw, W, W]` bool; entry
    `[n, i, j]` is True where frame slot i of rolled window n may not attend to slot j:
    - query rows of padded frames (every window);
    - key columns of padded frames, in the first and the last window;
    - in the first window, the cross blocks `[:half, half:]` and `[half:, :half]`, because
      its first `half` slots hold the wrapped-around last frames of the clip.
    Middle windows hold no padding and no wrapped frames, so their rows are all False.
    """
    half = window_shift(window_size)
    rolled = torch.roll(frame_is_padding, half, dims=0).view(-1, window_size)  # [Nw, W]
    blocked = rolled[:, :, None].expand(-1, -1, window_size).clone()  # [Nw, W(query), W(key)]
    blocked[0] |= rolled[0][None, :]
    blocked[-1] |= rolled[-1][None, :]
    in_first_half = torch.arange(window_size, device=frame_is_padding.device) < half
    blocked[0] |= in_first_half[:, None] != in_first_half[None, :]
    return blocked


def _token_mask(blocked_frames: Tensor, tokens_per_frame: int, dtype: torch.dtype) -> Tensor:
    """`[W, W]` bool frame pairs -> `[W * Q, W * Q]` additive float mask (frame-major)."""
    blocked = blocked_frames.repeat_interleave(tokens_per_frame, dim=0)
    blocked = blocked.repeat_interleave(tokens_per_frame, dim=1)
    return torch.zeros(blocked.shape, dtype=dtype, device=blocked.device).masked_fill(
        blocked, SHIFTED_WINDOW_BLOCKED
    )


def _to_windows(tokens: Tensor, window_size: int) -> Tensor:
    """`[Tp, Q, N, C] -> [W * Q, Nw, N, C]`, frame-major tokens inside each window."""
    padded_frames, per_frame, sequences, channels = tokens.shape
    windows = tokens.view(padded_frames // window_size, window_size, per_frame, sequences, channels)
    return windows.permute(1, 2, 0, 3, 4).reshape(window_size * per_frame, -1, sequences, channels)


def _from_windows(windows: Tensor, window_size: int) -> Tensor:
    """`[W * Q, Nw, N, C] -> [Tp, Q, N, C]`, the inverse of `_to_windows`."""
    tokens_per_window, num_windows, sequences, channels = windows.shape
    per_frame = tokens_per_window // window_size
    frames = windows.view(window_size, per_frame, num_windows, sequences, channels)
    return frames.permute(2, 0, 1, 3, 4).reshape(-1, per_frame, sequences, channels)


def _plain_window_layer(
    tokens: Tensor,
    self_attn: SelfAttentionLayer,
    ffn: FFNLayer,
    window_size: int,
    key_padding: Tensor | None,
) -> Tensor:
    """One encoder layer over non-overlapping windows: `[Tp, Q, N, C] -> [Tp, Q, N, C]`."""
    windows = _to_windows(tokens, window_size)
    tokens_per_window, num_windows, sequences, channels = windows.shape
    flat = windows.reshape(tokens_per_window, num_windows * sequences, channels)
    flat = ffn(self_attn(flat, key_padding_mask=key_padding))
    return _from_windows(flat.view(windows.shape), window_size)


def _shifted_window_layer(
    tokens: Tensor,
    self_attn: SelfAttentionLayer,
    ffn: FFNLayer,
    window_size: int,
    blocked_pairs: Tensor,
) -> Tensor:
    """One encoder layer over windows shifted by `ceil(W/2)` frames: `[Tp, Q, N, C]` in/out.

    Only the first and the last window need a mask (see `shifted_window_blocked_pairs`); they
    run on their own with a `[W*Q, W*Q]` mask shared by all sequences and heads, and the
    middle windows run together unmasked. Attention is independent per window and sequence,
    so this equals the official single call with a `[N*Nw*heads, W*Q, W*Q]` mask while
    keeping the mask's memory independent of the video length.
    """
    half = window_shift(window_size)
    per_frame = tokens.shape[1]
    windows = _to_windows(torch.roll(tokens, half, dims=0), window_size)  # [W*Q, Nw, N, C]
    num_windows = windows.shape[1]
    edge_windows = [0] if num_windows == 1 else [0, num_windows - 1]
    attended = {
        index: self_attn(
            windows[:, index], attn_mask=_token_mask(blocked_pairs[index], per_frame, tokens.dtype)
        )
        for index in edge_windows
    }
    parts = [attended[0][:, None]]
    if num_windows > 2:
        middle = windows[:, 1:-1]  # [W*Q, Nw-2, N, C]
        flat = self_attn(middle.reshape(middle.shape[0], -1, middle.shape[3]))
        parts.append(flat.view(middle.shape))
    if num_windows > 1:
        parts.append(attended[num_windows - 1][:, None])
    windows = ffn(torch.cat(parts, dim=1))
    return torch.roll(_from_windows(windows, window_size), -half, dims=0)


def encode_windows(
    padded_tokens: Tensor,
    frame_is_padding: Tensor,
    self_attn_layers: Sequence[SelfAttentionLayer],
    ffn_layers: Sequence[FFNLayer],
    window_size: int,
    shift_odd_layers: bool,
    layer_outputs: list[Tensor] | None = None,
) -> Tensor:
    """Run every encoder layer over windows of already padded frames.

    padded_tokens: `[Tp, Q, N, C]` with Tp a multiple of `window_size`; frame_is_padding:
    `[Tp]` bool (padded frames last). Returns `[Tp, Q, N, C]`; outputs of padded frames are
    meaningless. When `layer_outputs` is a list, each layer's output `[Tp, Q, N, C]` (roll
    undone) is appended to it.
    """
    if padded_tokens.shape[0] % window_size:
        raise ValueError(
            f"{padded_tokens.shape[0]} frames are not a multiple of the window {window_size}"
        )
    per_frame, sequences = padded_tokens.shape[1], padded_tokens.shape[2]
    key_padding = plain_window_key_padding(frame_is_padding, window_size, per_frame, sequences)
    blocked_pairs = shifted_window_blocked_pairs(frame_is_padding, window_size)
    tokens = padded_tokens
    for index, (self_attn, ffn) in enumerate(zip(self_attn_layers, ffn_layers, strict=True)):
        if shift_odd_layers and index % 2 == 1:
            tokens = _shifted_window_layer(tokens, self_attn, ffn, window_size, blocked_pairs)
        else:
            tokens = _plain_window_layer(tokens, self_attn, ffn, window_size, key_padding)
        if layer_outputs is not None:
            layer_outputs.append(tokens)
    return tokens


def encode_frame_tokens(
    tokens: Tensor,
    self_attn_layers: Sequence[SelfAttentionLayer],
    ffn_layers: Sequence[FFNLayer],
    window_size: int,
    shift_odd_layers: bool,
    layer_outputs: list[Tensor] | None = None,
) -> Tensor:
    """VITA's temporal encoder: `tokens [T, Q, N, C] -> [T, Q, N, C]`.

    `window_size` 0 means full attention over all `T * Q` tokens of a sequence. Otherwise
    frames are zero-padded to a multiple of W and every layer attends inside windows of W
    frames; with `shift_odd_layers` (the official eval mode) odd layers use shifted windows.
    No positional embedding is added. When `layer_outputs` is a list, each layer's output
    on the real frames, `[T, Q, N, C]`, is appended to it.
    """
    if window_size < 0:
        raise ValueError(f"window_size must be >= 0, got {window_size}")
    if len(self_attn_layers) != len(ffn_layers):
        raise ValueError(f"{len(self_attn_layers)} attention layers but {len(ffn_layers)} FFNs")
    num_frames, per_frame, sequences, channels = tokens.shape
    if window_size == 0:
        flat = tokens.reshape(num_frames * per_frame, sequences, channels)
        for self_attn, ffn in zip(self_attn_layers, ffn_layers, strict=True):
            flat = ffn(self_attn(flat))
            if layer_outputs is not None:
                layer_outputs.append(flat.view(tokens.shape))
        return flat.view(tokens.shape)
    padded, frame_is_padding = pad_to_window_multiple(tokens, window_size)
    padded_outputs: list[Tensor] | None = [] if layer_outputs is not None else None
    encoded = encode_windows(
        padded,
        frame_is_padding,
        self_attn_layers,
        ffn_layers,
        window_size,
        shift_odd_layers,
        padded_outputs,
    )
    if layer_outputs is not None and padded_outputs is not None:
        layer_outputs.extend(output[:num_frames] for output in padded_outputs)
    return encoded[:num_frames]
