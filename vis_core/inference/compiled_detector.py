"""The frame detector compiled by `torch.compile`: the `compile` detector backend.

Inductor (default mode) with freezing: under inference mode the weights are folded in as
constants, and on the CPU prepacked for oneDNN (the best of the settings measured on R-50;
on this project's CPU it gains little over eager, 1.1x for R-50 and none for the small
preset: README, Speed; it is meant for GPUs). Only `forward` is compiled, so
the detector keeps its other methods and attributes (`preprocess`, `mask_features` for a
long video's second pass, the frame decoder an online head reads) in eager PyTorch.

The first call compiles (R-50: about 2 minutes on one core of the development machine; the
small preset about 1); a later process reuses inductor's on-disk cache (seconds). A video
comes in chunks whose last is shorter, and videos differ in size: with dynamo's automatic
dynamic shapes the second shape seen compiles once more, for every size, and no further.
"""

from __future__ import annotations

from vis_core.modeling.vita_model import VitaModel


def compile_detector(model: VitaModel) -> VitaModel:
    """`model` with its frame detector's forward compiled (in place); for inference only
    (freezing takes the weights as they are now)."""
    if model.training:
        raise ValueError("the compiled detector is for inference: call model.eval() first")
    model.detector.compile(options={"freezing": True})
    return model
