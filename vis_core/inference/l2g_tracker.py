"""Local2Global's online inference as an `OnlineHead` (reference 3.4; every rule [default],
the paper gives none).

For each frame of a chunk, in order, the model's `L2gHead` runs the detector's frame
decoder from the previous frame's global queries (a video's first frame from the
learnable ones). Query i is track i for the whole video: there are no births, deaths or
re-identification. A query free of any object picks up a new one when it enters; an
object that leaves and returns keeps its track only if its query still holds it (the
paper's failure case is a dog that leaves and comes back and is not re-identified).

The video-level outputs are the `top_k` (query, class) pairs by the query's mean class
probability (softmax, no-object left out) over all the video's frames, so which pairs
survive is known only after the last frame. Masks are given as frames arrive (reference
4.2 (a)): a query's mask in a frame (the final prediction's logits) is given where it is
non-empty and the query's running mean probability of its best class, or its best class
probability in that frame, reaches `mask_score_floor`; an output pair has its query's
masks in those frames and empty masks elsewhere. A query may give two pairs (two classes)
with the same masks.

State: the global queries and their boxes (`L2gState`), each query's probability sums
and the frame count: O(Q (C + 4 + K)), whatever the length of the video.

Dimension letters: t frames of a chunk, Q queries, C channels, K classes, m masks, h x w
the stride-4 mask grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vis_core.inference.online import DetectorChunk, HeadStep, TrackMasks, TrackSummary
from vis_core.modeling.frame_decoder import FrameDecoder
from vis_core.modeling.frame_detector import FrameDetector
from vis_core.modeling.head_config import L2gConfig
from vis_core.modeling.l2g import L2gHead, L2gState
from vis_core.modeling.vita_model import VitaModel


@dataclass(frozen=True)
class L2gTrackState:
    """propagation: what the last frame handed on (None before a video's first frame);
    score_sum `[Q, K]`: each query's class probabilities summed over the frames seen;
    next_frame: the number of frames seen."""

    propagation: L2gState | None
    score_sum: Tensor
    next_frame: int = 0


@dataclass(frozen=True)
class QueryMasks:
    """One frame's given masks: queries `[m]` int64 and their mask logits `[m, h, w]`."""

    queries: Tensor
    mask_logits: Tensor


def frame_masks(
    probability: Tensor, mean_probability: Tensor, mask_logits: Tensor, floor: float
) -> QueryMasks:
    """The masks a frame gives (module docstring): probability and mean_probability
    `[Q, K]` (this frame's and the running mean including it), mask_logits `[Q, h, w]`."""
    eligible = (mean_probability.amax(dim=-1) >= floor) | (probability.amax(dim=-1) >= floor)
    shown = eligible & (mask_logits > 0).flatten(1).any(dim=1)
    queries = torch.nonzero(shown)[:, 0]
    return QueryMasks(queries=queries, mask_logits=mask_logits[queries])


def top_pairs(mean_probability: Tensor, top_k: int) -> tuple[TrackSummary, ...]:
    """The `top_k` best (query, class) pairs of `[Q, K]` mean probabilities, best first."""
    classes = mean_probability.shape[1]
    flat = mean_probability.float().flatten()
    scores, index = flat.topk(min(top_k, flat.numel()))
    return tuple(
        TrackSummary(track_id=pair // classes, label=pair % classes, score=score)
        for pair, score in zip(index.tolist(), scores.tolist(), strict=True)
    )


class L2gTracker:
    """The `OnlineHead` of a model with an L2G head (module docstring).

    decoder: the detector's frame decoder, which the head runs on every frame; `config`
    defaults to the head's.
    """

    def __init__(self, head: L2gHead, decoder: FrameDecoder, config: L2gConfig | None = None):
        self.head = head
        self.decoder = decoder
        self.config = config or head.config

    @classmethod
    def for_model(cls, model: VitaModel, config: L2gConfig | None = None) -> L2gTracker:
        """The tracker of `model`'s L2G head; a clear error when it has none."""
        if model.l2g is None:
            raise ValueError(
                f"model {model.config.name} has no L2G head: train one on its frozen detector "
                "with `vis train --method l2g --freeze-detector --init-model MODEL`"
            )
        if not isinstance(model.detector, FrameDetector):
            raise ValueError(
                "the l2g method runs the detector's frame decoder itself: it needs the "
                "PyTorch detector (--backend torch)"
            )
        return cls(model.l2g, model.detector.frame_decoder, config)

    def start(self) -> L2gTrackState:
        device = next(self.head.parameters()).device
        score_sum = torch.zeros(self.head.num_queries, self.head.num_classes, device=device)
        return L2gTrackState(propagation=None, score_sum=score_sum)

    def step(self, state: L2gTrackState, chunk: DetectorChunk) -> tuple[L2gTrackState, HeadStep]:
        if chunk.first_frame != state.next_frame:
            raise ValueError(f"chunk starts at frame {chunk.first_frame}, not {state.next_frame}")
        if not chunk.attended_maps or chunk.decoder_mask_features is None:
            raise ValueError("the L2G head needs the detector's attended maps and mask features")
        propagation, score_sum = state.propagation, state.score_sum
        frames, track_ids, mask_logits = [], [], []
        for offset in range(chunk.num_frames):
            maps = [level[offset : offset + 1] for level in chunk.attended_maps]
            features = chunk.decoder_mask_features[offset : offset + 1]
            output = self.head(self.decoder, maps, features, propagation)
            propagation = output.state
            final = output.predictions[-1]
            probability = final.pred_logits[0].float().softmax(dim=-1)[:, :-1]  # [Q, K]
            score_sum = score_sum + probability
            seen = state.next_frame + offset + 1
            given = frame_masks(
                probability, score_sum / seen, final.pred_masks[0], self.config.mask_score_floor
            )
            frame = chunk.first_frame + offset
            frames.append(torch.full((len(given.queries),), frame, dtype=torch.int64))
            track_ids.append(given.queries.cpu())
            mask_logits.append(given.mask_logits)
        masks = TrackMasks(
            frames=torch.cat(frames),
            track_ids=torch.cat(track_ids),
            mask_logits=torch.cat(mask_logits),
        )
        next_frame = chunk.first_frame + chunk.num_frames
        return L2gTrackState(propagation, score_sum, next_frame), HeadStep(masks=masks)

    def finish(self, state: L2gTrackState) -> tuple[TrackSummary, ...]:
        if state.next_frame == 0:
            return ()
        return top_pairs(state.score_sum / state.next_frame, self.config.top_k)
