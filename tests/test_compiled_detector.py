"""torch.compile (inductor) gives the eager frame detector's outputs on the small preset.

Marked slow: the compilation alone takes minutes on a 2-core CPU (see
benchmarks/bench_backends.py). The tolerances are those of the ONNX export (see
test_onnx_export.py): the masked attention's hard threshold turns tiny float differences
into small jumps of the decoder's outputs.
"""

from __future__ import annotations

import pytest
import torch

from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel

TOLERANCE = {
    "pred_logits": 2e-2,
    "pred_masks": 1e-1,
    "frame_queries": 2e-2,
    "clip_mask_features": 1e-3,
}


@pytest.mark.slow
def test_compiled_detector_equals_eager():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = VitaModel(vita_small_synth()).eval()
        frames = torch.randint(0, 256, (2, 240, 320, 3), dtype=torch.uint8)
        images = model.detector.preprocess(frames)
        compiled = torch.compile(model.detector)
        with torch.inference_mode():
            expected, actual = model.detector(images), compiled(images)
    finally:
        torch.set_num_threads(threads)
    errors = {
        name: float((getattr(expected, name) - getattr(actual, name)).abs().max())
        for name in TOLERANCE
    }
    print("max |compiled - eager|:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert all(errors[name] <= TOLERANCE[name] for name in TOLERANCE), errors


@pytest.mark.slow
def test_compiled_deformable_attention_equals_eager():
    """The deformable attention's default sampling path (`embedding_bag`) under
    torch.compile gives the eager outputs (R-50's widths, three small levels)."""
    from vis_core.modeling import ms_deform_attn
    from vis_core.modeling.ms_deform_attn import MSDeformAttn

    assert ms_deform_attn.SAMPLING == "bag"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        attention = MSDeformAttn(dim=256, levels=3, heads=8, points=4).eval()
        with torch.no_grad():  # offsets that reach past the maps' borders too
            attention.sampling_offsets.weight.normal_(0.0, 0.5)
            attention.attention_weights.weight.normal_(0.0, 0.1)
        shapes, starts = [(12, 20), (6, 10), (3, 5)], [0, 240, 300]
        value = torch.randn(2, 315, 256)
        query = torch.randn(2, 315, 256)
        reference = torch.rand(2, 315, 3, 2)
        compiled = torch.compile(attention)
        with torch.inference_mode():
            expected = attention(query, reference, value, shapes, starts)
            actual = compiled(query, reference, value, shapes, starts)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
