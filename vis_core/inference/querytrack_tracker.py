"""QueryTrack's online inference as an `OnlineHead` (reference 1.4).

For each frame of a chunk:
1. candidates: the top `candidates` queries by confidence pi (largest non-object class
   probability) with pi >= `candidate_score`, each with its class, the tight box around
   its stride-4 mask (logit > 0) and its track embedding from the model's `QueryTrackHead`,
   after mask NMS (`candidate_nms_iou`);
2. tracks unmatched for `time_to_live` frames are finished and leave the memory;
3. the association rule (`association.py`) continues or starts tracks;
4. each candidate that joined or started a track gives that track's mask in the frame:
   the query's detector mask logits.

A finished track's summary is its class (fixed at birth) and its mean pi over matched
frames (reference [default], as CrossVIS); tracks matched in fewer than
`min_matched_frames` frames are not output.

Dimension letters: t frames of a chunk, Q frame queries, M candidates, E embedding
channels, h x w the stride-4 mask grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vis_core.inference.association import Candidates, TrackMemory, associate, expire
from vis_core.inference.mask_overlap import mask_nms
from vis_core.inference.online import DetectorChunk, HeadStep, TrackMasks, TrackSummary
from vis_core.modeling.boxes import mask_to_box
from vis_core.modeling.head_config import AssociationConfig
from vis_core.modeling.querytrack import QueryTrackHead, query_confidence
from vis_core.modeling.vita_model import VitaModel


@dataclass(frozen=True)
class QueryTrackState:
    """The live tracks and the index of the next frame."""

    memory: TrackMemory
    next_frame: int = 0


class QueryTrackTracker:
    """The `OnlineHead` of a model with a QueryTrack head (module docstring).

    `config` defaults to the association settings in the model's config.
    """

    def __init__(self, head: QueryTrackHead, config: AssociationConfig | None = None):
        self.head = head
        self.config = config or head.config.association

    @classmethod
    def for_model(
        cls, model: VitaModel, config: AssociationConfig | None = None
    ) -> QueryTrackTracker:
        """The tracker of `model`'s QueryTrack head; a clear error when it has none."""
        if model.querytrack is None:
            raise ValueError(
                f"model {model.config.name} has no QueryTrack head: train one on its frozen "
                "detector with `vis train --method querytrack --freeze-detector "
                "--init-model MODEL`"
            )
        return cls(model.querytrack, config)

    def start(self) -> QueryTrackState:
        device = next(self.head.parameters()).device
        return QueryTrackState(TrackMemory.empty(self.head.config.embed_dim, device))

    def step(
        self, state: QueryTrackState, chunk: DetectorChunk
    ) -> tuple[QueryTrackState, HeadStep]:
        if chunk.first_frame != state.next_frame:
            raise ValueError(f"chunk starts at frame {chunk.first_frame}, not {state.next_frame}")
        confidence = query_confidence(chunk.class_logits)  # [t, Q]
        count = min(self.config.candidates, confidence.scores.shape[1])
        scores, queries = confidence.scores.topk(count, dim=1)  # [t, M], best first
        embeddings = self.head(chunk.frame_queries).float()  # [t, Q, E]
        memory = state.memory
        frames, track_ids, mask_logits = [], [], []
        finished: list[TrackSummary] = []
        for offset in range(chunk.num_frames):
            frame = chunk.first_frame + offset
            sure = scores[offset] >= self.config.candidate_score
            chosen, chosen_scores = queries[offset][sure], scores[offset][sure]
            candidate_masks = chunk.mask_logits[offset, chosen]  # [M, h, w]
            if self.config.candidate_nms_iou is not None:
                kept = mask_nms(candidate_masks > 0, chosen_scores, self.config.candidate_nms_iou)
                chosen, chosen_scores = chosen[kept], chosen_scores[kept]
                candidate_masks = candidate_masks[kept]
            candidates = Candidates(
                embeddings=embeddings[offset, chosen],
                boxes=mask_to_box(candidate_masks > 0),
                labels=confidence.labels[offset, chosen],
                scores=chosen_scores,
            )
            memory, ended = expire(memory, frame, self.config.time_to_live)
            finished.extend(self._summaries(ended))
            association = associate(memory, candidates, frame, self.config)
            memory = association.memory
            joined = association.track_ids >= 0
            frames.append(torch.full((int(joined.sum()),), frame, dtype=torch.int64))
            track_ids.append(association.track_ids[joined].cpu())
            mask_logits.append(candidate_masks[joined])
        masks = TrackMasks(
            frames=torch.cat(frames),
            track_ids=torch.cat(track_ids),
            mask_logits=torch.cat(mask_logits),
        )
        next_state = QueryTrackState(memory, chunk.first_frame + chunk.num_frames)
        return next_state, HeadStep(masks=masks, finished=tuple(finished))

    def finish(self, state: QueryTrackState) -> tuple[TrackSummary, ...]:
        return self._summaries(state.memory)

    def _summaries(self, memory: TrackMemory) -> tuple[TrackSummary, ...]:
        """Summaries of the tracks of `memory` matched in enough frames."""
        keep = memory.matched >= self.config.min_matched_frames
        ids, labels = memory.ids[keep].tolist(), memory.labels[keep].tolist()
        scores = (memory.score_sum[keep] / memory.matched[keep]).tolist()
        return tuple(
            TrackSummary(track_id=track_id, label=label, score=score)
            for track_id, label, score in zip(ids, labels, scores, strict=True)
        )
