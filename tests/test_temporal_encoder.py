"""VITA's windowed temporal encoder against a literal reference, plus its properties.

The reference below is written from the spec text (reference/vita_mask2former.md,
section 1): explicit loops over windows and sequences, the shifted-window mask built pair
by pair with the official `-1000` value, a boolean key-padding mask for plain windows.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from vis_core.modeling.layers import FFNLayer, SelfAttentionLayer
from vis_core.modeling.temporal_encoder import (
    SHIFTED_WINDOW_BLOCKED,
    encode_frame_tokens,
    encode_windows,
    pad_to_window_multiple,
    plain_window_key_padding,
    shifted_window_blocked_pairs,
)

DIM, HEADS, FFN_DIM, PER_FRAME, SEQUENCES = 16, 2, 32, 3, 2


def make_layers(num_layers: int, seed: int = 0) -> tuple[nn.ModuleList, nn.ModuleList]:
    """Encoder layers with every parameter (norms included) random, so no term hides."""
    torch.manual_seed(seed)
    attn = nn.ModuleList(SelfAttentionLayer(DIM, HEADS) for _ in range(num_layers))
    ffn = nn.ModuleList(FFNLayer(DIM, FFN_DIM) for _ in range(num_layers))
    with torch.no_grad():
        for parameter in [*attn.parameters(), *ffn.parameters()]:
            parameter.copy_(torch.randn_like(parameter) * 0.3 + (parameter == 1).float())
    return attn, ffn


def random_tokens(frames: int, seed: int = 1) -> Tensor:
    """`[T, Q, N, C]` object tokens."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(frames, PER_FRAME, SEQUENCES, DIM, generator=generator)


def reference_encoder(
    tokens: Tensor, attn: nn.ModuleList, ffn: nn.ModuleList, window: int, shift: bool
) -> Tensor:
    """Slow, literal VITA temporal encoder: `[T, Q, N, C] -> [T, Q, N, C]`."""
    frames, per_frame, sequences, channels = tokens.shape
    if window == 0:
        x = tokens.reshape(frames * per_frame, sequences, channels)
        for attn_layer, ffn_layer in zip(attn, ffn, strict=True):
            x = ffn_layer(attn_layer(x))
        return x.view(tokens.shape)
    num_windows = math.ceil(frames / window)
    padded_frames = num_windows * window
    half = math.ceil(window / 2)
    x = torch.cat([tokens, tokens.new_zeros(padded_frames - frames, *tokens.shape[1:])])
    is_pad = [t >= frames for t in range(padded_frames)]
    for layer_index, (attn_layer, ffn_layer) in enumerate(zip(attn, ffn, strict=True)):
        shifted = shift and layer_index % 2 == 1
        frame_pad = is_pad
        if shifted:
            x = torch.roll(x, half, dims=0)
            frame_pad = [is_pad[(p - half) % padded_frames] for p in range(padded_frames)]
        out = torch.empty_like(x)
        for n in range(num_windows):
            window_pad = frame_pad[n * window : (n + 1) * window]
            for s in range(sequences):
                seq = x[n * window : (n + 1) * window, :, s].reshape(
                    window * per_frame, 1, channels
                )
                if shifted:
                    mask = torch.zeros(window * per_frame, window * per_frame)
                    for i in range(window):
                        for j in range(window):
                            blocked = window_pad[i]
                            if n in (0, num_windows - 1):
                                blocked = blocked or window_pad[j]
                            if n == 0 and (i < half) != (j < half):
                                blocked = True
                            if blocked:
                                rows = slice(i * per_frame, (i + 1) * per_frame)
                                cols = slice(j * per_frame, (j + 1) * per_frame)
                                mask[rows, cols] = -1000.0
                    y = attn_layer(seq, attn_mask=mask)
                else:
                    padding = [window_pad[w] for w in range(window) for _ in range(per_frame)]
                    y = attn_layer(seq, key_padding_mask=torch.tensor([padding]))
                out[n * window : (n + 1) * window, :, s] = ffn_layer(y).view(
                    window, per_frame, channels
                )
        x = out
        if shifted:
            x = torch.roll(x, -half, dims=0)
    return x[:frames]


@pytest.mark.parametrize(
    ("frames", "window"),
    [
        (2, 3),  # T < W
        (3, 3),  # T = W
        (6, 3),  # T a multiple of W
        (7, 3),  # T not a multiple (the fixture case)
        (5, 1),  # W = 1
        (5, 0),  # W = 0: full attention
        (3, 4),  # even W, T < W
        (8, 4),  # even W, multiple
        (7, 6),  # padding in the last shifted window too
        (13, 6),  # the official window, three windows
        (10, 6),  # a real wrapped frame next to wrapped padded ones in the first window
        (11, 4),  # the same with even W
        (1, 2),  # a single frame
    ],
)
@pytest.mark.parametrize("shift", [True, False], ids=["eval", "train"])
def test_matches_literal_reference(frames, window, shift):
    attn, ffn = make_layers(4)
    tokens = random_tokens(frames)
    with torch.no_grad():
        expected = reference_encoder(tokens, attn, ffn, window, shift)
        actual = encode_frame_tokens(tokens, attn, ffn, window, shift_odd_layers=shift)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window", [5, 6, 8])
def test_one_plain_window_over_all_frames_is_full_attention(window):
    attn, ffn = make_layers(3)
    tokens = random_tokens(5)
    with torch.no_grad():
        full = encode_frame_tokens(tokens, attn, ffn, 0, shift_odd_layers=False)
        windowed = encode_frame_tokens(tokens, attn, ffn, window, shift_odd_layers=False)
    torch.testing.assert_close(windowed, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window", [5, 6, 8])
def test_shifted_window_over_all_frames_is_not_full_attention(window):
    # Even when one window covers the clip, the shifted layer's first window holds the
    # wrapped-around last frames, which may not attend to the first ones.
    attn, ffn = make_layers(2)
    tokens = random_tokens(5)
    with torch.no_grad():
        full = encode_frame_tokens(tokens, attn, ffn, 0, shift_odd_layers=True)
        shifted = encode_frame_tokens(tokens, attn, ffn, window, shift_odd_layers=True)
    assert (shifted - full).abs().max() > 1e-2


def test_plain_padding_does_not_change_real_frames():
    # With plain windows only, T=7 (2 padded frames in window 2) must equal frames 0-5 run
    # as T=6 (no padding) and frame 6 run alone (padded inside its own window).
    attn, ffn = make_layers(3)
    tokens = random_tokens(7)
    with torch.no_grad():
        whole = encode_frame_tokens(tokens, attn, ffn, 3, shift_odd_layers=False)
        first = encode_frame_tokens(tokens[:6], attn, ffn, 3, shift_odd_layers=False)
        last = encode_frame_tokens(tokens[6:], attn, ffn, 3, shift_odd_layers=False)
    torch.testing.assert_close(whole, torch.cat([first, last]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("frames", "window"), [(7, 3), (4, 3), (5, 6), (7, 6), (3, 4), (10, 6), (11, 4)]
)
@pytest.mark.parametrize("shift", [True, False], ids=["eval", "train"])
def test_padded_slot_content_never_reaches_real_frames(frames, window, shift):
    attn, ffn = make_layers(4)
    padded, is_pad = pad_to_window_multiple(random_tokens(frames), window)
    assert int(is_pad.sum()) == padded.shape[0] - frames > 0
    garbage = padded.clone()
    garbage[is_pad] = torch.randn_like(garbage[is_pad]) * 100.0
    clean_layers: list[Tensor] = []
    garbage_layers: list[Tensor] = []
    with torch.no_grad():
        encode_windows(padded, is_pad, attn, ffn, window, shift, clean_layers)
        encode_windows(garbage, is_pad, attn, ffn, window, shift, garbage_layers)
    for clean, dirty in zip(clean_layers, garbage_layers, strict=True):
        torch.testing.assert_close(dirty[:frames], clean[:frames], rtol=1e-5, atol=1e-6)


def test_shifted_layer_carries_information_across_windows():
    # T=6, W=3: plain windows {0,1,2} {3,4,5}; shifted windows {4,5,0} {1,2,3}.
    attn, ffn = make_layers(2)
    tokens = random_tokens(6)
    perturbed = tokens.clone()
    perturbed[0] += 1.0
    with torch.no_grad():
        for shift in (False, True):
            base = encode_frame_tokens(tokens, attn, ffn, 3, shift_odd_layers=shift)
            moved = encode_frame_tokens(perturbed, attn, ffn, 3, shift_odd_layers=shift)
            change = (moved - base).abs().amax(dim=(1, 2, 3))  # [T]
            assert change[:3].min() > 1e-3  # frame 0's own window
            if shift:
                assert change[3] > 1e-3  # frames 1, 2 carry it to frame 3 in the shifted layer
            else:
                assert change[3] == 0
            # Frames 4 and 5 share frame 0's shifted window but as wrapped-around end frames
            # they may not attend to it, so they see nothing either way.
            assert change[4:].max() == 0


def test_shifted_blocked_pairs_for_the_fixture_case():
    # T=7, W=3: 9 frames, frames 7 and 8 padded; rolled by 2 the first window holds
    # frames 7, 8, 0.
    is_pad = torch.arange(9) >= 7
    blocked = shifted_window_blocked_pairs(is_pad, 3)
    assert blocked.shape == (3, 3, 3)
    expected_first = torch.ones(3, 3, dtype=torch.bool)
    expected_first[2, 2] = False  # frame 0 attends only to itself
    torch.testing.assert_close(blocked[0], expected_first)
    assert not blocked[1:].any()


def test_shifted_blocked_pairs_cross_blocks_without_padding():
    blocked = shifted_window_blocked_pairs(torch.zeros(8, dtype=torch.bool), 4)
    expected_first = torch.tensor(
        [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool
    )
    torch.testing.assert_close(blocked[0], expected_first)
    assert not blocked[1].any()


def test_key_padding_layout_and_blocked_value():
    is_pad = torch.arange(6) >= 5
    padding = plain_window_key_padding(is_pad, 3, tokens_per_frame=2, num_sequences=2)
    assert padding is not None and padding.shape == (4, 6)
    # batch index n * N + s: window 1 of both sequences has its last frame padded.
    assert not padding[:2].any()
    assert padding[2:, 4:].all() and not padding[2:, :4].any()
    assert plain_window_key_padding(torch.zeros(6, dtype=torch.bool), 3, 2, 2) is None
    assert SHIFTED_WINDOW_BLOCKED == -1000.0


def test_layer_outputs_are_collected_on_real_frames():
    attn, ffn = make_layers(3)
    tokens = random_tokens(7)
    outputs: list[Tensor] = []
    with torch.no_grad():
        final = encode_frame_tokens(tokens, attn, ffn, 3, True, layer_outputs=outputs)
    assert len(outputs) == 3 and all(out.shape == tokens.shape for out in outputs)
    torch.testing.assert_close(outputs[-1], final)


def test_bad_arguments_raise():
    attn, ffn = make_layers(2)
    with pytest.raises(ValueError, match="window_size"):
        encode_frame_tokens(random_tokens(3), attn, ffn, -1, False)
    with pytest.raises(ValueError, match="attention layers"):
        encode_frame_tokens(random_tokens(3), attn, ffn[:1], 3, False)
    with pytest.raises(ValueError, match="multiple"):
        encode_windows(random_tokens(4), torch.zeros(4, dtype=torch.bool), attn, ffn, 3, False)
