"""QueryTrack's online association rule on plain tensors (reference 1.4 and section 4).

One frame at a time, the frame's candidates (embedding, box, class, confidence pi) are
matched to the live tracks of a `TrackMemory`:

    S[m, n] = (softmax over tracks + softmax over candidates of e_m . e_n) / 2   (bi-softmax)
    F[m, n] = S * (1 + IoU(b_m, b_n)) / 2 * (1 + pi_m) / 2 * [c_m == c_n]        (Eq. 8)

- Hungarian assignment maximising F over the allowed pairs: same class (`class_gate`) and
  S above `match_threshold` [default 0.5]. F only ranks: its IoU and confidence factors
  lie in [0.5, 1], so a threshold on F would reject fast movers and unsure frames.
- A match updates the track: EMA embedding `e <- (1 - m) e + m e_new` (m = `momentum`
  weighs the new one), last box, last frame, confidence sum and count; its class stays.
- An unmatched candidate with pi above `birth_score` starts a track; the rest are dropped.
- `expire` takes out the tracks unmatched for `time_to_live` frames: they can no longer
  be continued, so an online caller hands them on as finished.

Memory holds the live tracks only: at most `candidates` tracks are matched or born per
frame and a track lives `time_to_live` frames past its last match, so it never holds more
than `candidates * time_to_live` tracks, however long the video.

Dimension letters: M candidates of a frame, K live tracks, E embedding channels.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from vis_core.losses.matcher import solve_assignment
from vis_core.modeling.boxes import box_iou
from vis_core.modeling.head_config import AssociationConfig


@dataclass(frozen=True)
class Candidates:
    """One frame's candidates: embeddings `[M, E]` float, boxes `[M, 4]` (cx, cy, w, h),
    labels `[M]` int64, scores `[M]` (pi, in [0, 1])."""

    embeddings: Tensor
    boxes: Tensor
    labels: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return self.embeddings.shape[0]


@dataclass(frozen=True)
class TrackMemory:
    """The live tracks, K of each: ids `[K]` int64, embeddings `[K, E]` (EMA), boxes
    `[K, 4]` (last matched), labels `[K]` int64, last_seen `[K]` int64 (last matched
    frame), score_sum `[K]` float (sum of pi over matched frames), matched `[K]` int64
    (matched frames); next_id: the id the next new track gets."""

    ids: Tensor
    embeddings: Tensor
    boxes: Tensor
    labels: Tensor
    last_seen: Tensor
    score_sum: Tensor
    matched: Tensor
    next_id: int = 0

    @classmethod
    def empty(cls, embed_dim: int, device: torch.device | str = "cpu") -> TrackMemory:
        def longs() -> Tensor:
            return torch.zeros(0, dtype=torch.int64, device=device)

        return cls(
            ids=longs(),
            embeddings=torch.zeros(0, embed_dim, device=device),
            boxes=torch.zeros(0, 4, device=device),
            labels=longs(),
            last_seen=longs(),
            score_sum=torch.zeros(0, device=device),
            matched=longs(),
        )

    def __len__(self) -> int:
        return self.ids.shape[0]

    def select(self, keep: Tensor) -> TrackMemory:
        """The tracks where `keep [K]` (bool) is True, same next_id."""
        return TrackMemory(*(getattr(self, f.name)[keep] for f in _TRACK_FIELDS), self.next_id)

    def nbytes(self) -> int:
        """Bytes of its tensors (it holds nothing else that grows)."""
        return sum(getattr(self, f.name).nbytes for f in _TRACK_FIELDS)


_TRACK_FIELDS = tuple(f for f in fields(TrackMemory) if f.name != "next_id")


@dataclass(frozen=True)
class Association:
    """A frame's outcome: the memory after it, and per candidate `track_ids [M]` int64, the
    track it continued or started (-1: dropped)."""

    memory: TrackMemory
    track_ids: Tensor


def bi_softmax(logits: Tensor) -> Tensor:
    """Raw similarities `[M, K]` -> the mean of their softmax over K and over M."""
    if logits.numel() == 0:
        return logits
    return (logits.softmax(dim=1) + logits.softmax(dim=0)) / 2


def expire(memory: TrackMemory, frame: int, time_to_live: int) -> tuple[TrackMemory, TrackMemory]:
    """Split the memory before `frame`: (tracks still matchable, tracks unmatched since
    `time_to_live` frames or more)."""
    alive = frame - memory.last_seen < time_to_live
    return memory.select(alive), memory.select(~alive)


def association_scores(
    memory: TrackMemory, candidates: Candidates, config: AssociationConfig
) -> tuple[Tensor, Tensor]:
    """F `[M, K]` (Eq. 8) and which pairs may match `[M, K]` bool (class gate, S gate)."""
    similarity = bi_softmax(candidates.embeddings.float() @ memory.embeddings.float().T)
    iou = box_iou(candidates.boxes, memory.boxes)
    confidence = (1 + candidates.scores.float()[:, None]) / 2
    same_class = candidates.labels[:, None] == memory.labels[None, :]
    allowed = similarity > config.match_threshold
    if config.class_gate:
        allowed &= same_class
    score = similarity * (1 + iou) / 2 * confidence * same_class.float()
    return score, allowed


def associate(
    memory: TrackMemory, candidates: Candidates, frame: int, config: AssociationConfig
) -> Association:
    """Match one frame's candidates to the (already expired) memory, update the matched
    tracks and start new ones (module docstring)."""
    count = len(candidates)
    track_ids = torch.full((count,), -1, dtype=torch.int64, device=memory.ids.device)
    rows = cols = torch.zeros(0, dtype=torch.int64)
    if count and len(memory):
        score, allowed = association_scores(memory, candidates, config)
        # Disallowed pairs cost 0, as leaving both unmatched does: max-weight matching.
        pairs = solve_assignment(torch.where(allowed, -score, torch.zeros_like(score)))
        keep = allowed.cpu()[pairs.prediction_index, pairs.target_index]
        rows, cols = pairs.prediction_index[keep], pairs.target_index[keep]
    memory = _update(memory, candidates, rows, cols, frame, config.momentum)
    track_ids[rows] = memory.ids[cols]

    unmatched = torch.ones(count, dtype=torch.bool)
    unmatched[rows] = False
    born = torch.nonzero(unmatched & (candidates.scores.cpu() > config.birth_score))[:, 0]
    new_ids = torch.arange(len(born), dtype=torch.int64) + memory.next_id
    track_ids[born] = new_ids.to(track_ids.device)
    return Association(memory=_born(memory, candidates, born, new_ids, frame), track_ids=track_ids)


def _update(
    memory: TrackMemory,
    candidates: Candidates,
    rows: Tensor,
    cols: Tensor,
    frame: int,
    momentum: float,
) -> TrackMemory:
    """Tracks `cols` take candidates `rows` (both `[P]`)."""
    if len(rows) == 0:
        return memory
    embeddings, boxes = memory.embeddings.clone(), memory.boxes.clone()
    last_seen, score_sum = memory.last_seen.clone(), memory.score_sum.clone()
    matched = memory.matched.clone()
    new = candidates.embeddings[rows].to(embeddings.dtype)
    embeddings[cols] = (1 - momentum) * embeddings[cols] + momentum * new
    boxes[cols] = candidates.boxes[rows].to(boxes.dtype)
    last_seen[cols] = frame
    score_sum[cols] += candidates.scores[rows].to(score_sum.dtype)
    matched[cols] += 1
    return TrackMemory(
        memory.ids, embeddings, boxes, memory.labels, last_seen, score_sum, matched, memory.next_id
    )


def _born(
    memory: TrackMemory, candidates: Candidates, born: Tensor, new_ids: Tensor, frame: int
) -> TrackMemory:
    """The memory with candidates `born [B]` added as tracks `new_ids [B]`."""
    if len(born) == 0:
        return memory
    device = memory.ids.device
    ones = torch.ones(len(born), dtype=torch.int64, device=device)
    return TrackMemory(
        ids=torch.cat((memory.ids, new_ids.to(device))),
        embeddings=torch.cat((memory.embeddings, candidates.embeddings[born].float())),
        boxes=torch.cat((memory.boxes, candidates.boxes[born].float())),
        labels=torch.cat((memory.labels, candidates.labels[born])),
        last_seen=torch.cat((memory.last_seen, ones * frame)),
        score_sum=torch.cat((memory.score_sum, candidates.scores[born].float())),
        matched=torch.cat((memory.matched, ones)),
        next_id=memory.next_id + len(born),
    )
