"""Configuration of the online temporal heads that sit beside VITA on the frame detector.

A head's config is an optional field of `ModelConfig` (`ModelConfig.querytrack`): a model
file carries the head's architecture, loss and inference settings with its weights, and
model files written before the head existed load with the field None.

Values marked [default] are the reference's choices where the paper is silent
(reference/temporal_heads.md sections 1.2 to 1.4 and 1.6).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AssociationConfig:
    """QueryTrack's online association rule (reference 1.4; `vis_core/inference/association.py`).

    candidates: the top queries of a frame by confidence that may join or start a track,
        among those with a confidence of at least `candidate_score` [default 0.1, IDOL's
        `INFERENCE_SELECT_THRES`]: the embeddings of unsure queries are never trained, and
        in the bi-softmax they would draw similarity away from the true pairs.
    match_threshold: a (candidate, track) pair may match only when its bi-softmax
        similarity exceeds this; the product F only ranks. 0.3, below IDOL's and QDTrack's
        0.5 (CrossVIS: 0.4): a head trained for minutes on a frozen detector has small
        embeddings whose softmax over a dozen tracks is flat, so at 0.5 tracks broke
        every few frames (on `val`, seed 0, with the shipped model: AP 6.7 at 0.5,
        12.3 at 0.3; the comparison in the README is on an unseen seed).
    class_gate: only candidates and tracks of the same class match (the paper's delta).
    birth_score: an unmatched candidate above this confidence starts a track [default 0.5,
        the class default of IDOL's tracker; its VIS config's 0.2 started a track for each
        unsure duplicate of our detector].
    time_to_live: a track stays matchable while `frame - last_matched < time_to_live`
        [default 10, IDOL's and QDTrack's `memo_tracklet_frames`].
    momentum: the weight of the new embedding in the track's EMA [default 0.8].
    min_matched_frames: tracks matched in fewer frames are not output [default 3, the
        reference's option; IDOL prunes such tracks too].
    candidate_nms_iou: a candidate whose stride-4 mask overlaps a better one's by more
        than this IoU is dropped before the association [0.5, IDOL's `nms_thr_pre`;
        None: off]. A detector that covers one object with several confident queries
        would otherwise split the bi-softmax between them and start a track for each.
    """

    candidates: int = 10
    candidate_score: float = 0.1
    match_threshold: float = 0.3
    class_gate: bool = True
    birth_score: float = 0.5
    time_to_live: int = 10
    momentum: float = 0.8
    min_matched_frames: int = 3
    candidate_nms_iou: float | None = 0.5

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.time_to_live < 1 or self.min_matched_frames < 1:
            raise ValueError("candidates, time_to_live and min_matched_frames must be >= 1")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {self.momentum}")
        if not 0.0 <= self.match_threshold < 1.0:
            raise ValueError(f"match_threshold must be in [0, 1), got {self.match_threshold}")


@dataclass(frozen=True)
class QueryTrackConfig:
    """The QueryTrack-style contrastive embedding head (reference section 1).

    embed_dim: E, the track-embedding size; mlp_layers: the MLP over a frame query
    (C -> C -> ... -> E, ReLU between) [default 3 layers, E = 256].
    loss_weight, focal_alpha, focal_gamma: the contrastive focal loss (Eq. 5-7) [default
    1.0, 0.25 on the positive entry, 2].
    background_negatives: the reference frame's unmatched queries join the loss as
    negatives (not in the paper, whose reference entries are its identified instances;
    IDOL and QDTrack contrast against background too). A detector unsure of what is an
    object fills the candidates with background queries, which then must not look like
    any track.
    """

    embed_dim: int = 256
    mlp_layers: int = 3
    loss_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    background_negatives: bool = False
    association: AssociationConfig = field(default_factory=AssociationConfig)

    def __post_init__(self) -> None:
        if self.embed_dim < 1 or self.mlp_layers < 1:
            raise ValueError("embed_dim and mlp_layers must be >= 1")
        if not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"focal_alpha must be in [0, 1], got {self.focal_alpha}")


@dataclass(frozen=True)
class SlotIdentityConfig:
    """HF's online identity rule (reference 2.4; `vis_core/inference/slot_identity.py`).

    pixel_threshold: a cell belongs to an object slot's binary mask when, of the softmax
        over slots, that slot has the largest probability of the object slots, more than
        the no-object slots together (the background, as the mask-ID loss trains it) and
        at least this much [default 0: deeplab2's 0.4 is for panoptic maps, where every
        pixel is some segment's]. On the overfit test's videos (3 seeds) this rule gave
        AP 0.95; a plain argmax over all slots 0.85 to 0.90; either with 0.4, 0.68 to 0.80.
    iou_threshold: a non-empty slot takes the identity of the slot of the previous frame
        whose mask it overlaps above this IoU, greedily best first (the paper's 0.5).
    memory_frames: otherwise a slot keeps its own identity when it was non-empty within the
        last `memory_frames` frames [default 5]; after that the identity ends.
    """

    pixel_threshold: float = 0.0
    iou_threshold: float = 0.5
    memory_frames: int = 5

    def __post_init__(self) -> None:
        if not 0.0 <= self.pixel_threshold < 1.0:
            raise ValueError(f"pixel_threshold must be in [0, 1), got {self.pixel_threshold}")
        if not 0.0 <= self.iou_threshold < 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1), got {self.iou_threshold}")
        if self.memory_frames < 1:
            raise ValueError(f"memory_frames must be >= 1, got {self.memory_frames}")


@dataclass(frozen=True)
class HitfConfig:
    """The hybrid instance-code temporal fusion head, HF (reference section 2).

    The detector's frame queries are the instance code (one slot per query), its stride-4
    mask features average-pooled to `pixel_stride` the pixel map [default: a pooled
    stride-4 map stands in for the pixel decoder's stride-16 one]. Width, heads and FFN
    size are the frame decoder's (reference 2.2 table).

    references: R, the previous frames every frame attends to (Table 6: 3).
    blocks: M_alt, the (inter-frame, intra-frame) alternations (Table 4: 2).
    reference_pixels: inter-frame code attention reads the references' pixel maps too
        (Eq. 3's c2p); False reads their codes only, and the online state then holds no
        pixel map [default True, the paper].
    pq_weight, positive_weight, mask_id_weight: the loss (Eq. 9) = pq_weight *
        (positive_weight * L_pos + (1 - positive_weight) * L_neg) + mask_id_weight *
        L_mask_id [default: MaX-DeepLab's 3.0, 0.75 and 0.3].
    pairwise_matching: match frames t-1 and t with one permutation (Eq. 6-8, "PM");
        False matches frame t alone.
    """

    references: int = 3
    blocks: int = 2
    pixel_stride: int = 16
    reference_pixels: bool = True
    pq_weight: float = 3.0
    positive_weight: float = 0.75
    mask_id_weight: float = 0.3
    pairwise_matching: bool = True
    identity: SlotIdentityConfig = field(default_factory=SlotIdentityConfig)

    def __post_init__(self) -> None:
        if self.references < 1 or self.blocks < 1:
            raise ValueError("references and blocks must be >= 1")
        if self.pixel_stride < 4 or self.pixel_stride % 4:
            raise ValueError(f"pixel_stride must be a multiple of 4, got {self.pixel_stride}")
        if not 0.0 <= self.positive_weight <= 1.0:
            raise ValueError(f"positive_weight must be in [0, 1], got {self.positive_weight}")


@dataclass(frozen=True)
class L2gConfig:
    """The Local2Global query-propagation head (reference section 3): global queries
    carried from frame to frame, aligned to the frame's local queries (the top tokens of
    the maps the frame decoder attends) before the detector's frame decoder runs on them.

    Sizes follow the frame decoder's width C (the paper's C = 256):
    aligner_layers: the L2G aligner's post-norm layers, each self-attention, cross-attention
        to the local queries, FFN (3, Table 5; self-attention: the paper's 3.2 M parameters).
    aligner_ffn_dim: the FFN width; None is 4 C (the paper's 1024 at C = 256, Table 5).
    aligner_heads: None is the frame decoder's head count (the paper's 8 at C = 256).
    box_embed_layers: the g_pos MLP over the sine-embedded previous box (4 x C/2 -> C -> C,
        2 layers, as DAB-DETR and Mask DINO).
    top_k: the video-level outputs, the best (query, class) pairs by the query's mean class
        probability over the video [default 10, the YTVIS value; 20 for OVIS].
    mask_score_floor: a query's mask in a frame is written (streaming, reference 4.2 (a))
        while its running mean class probability, or its class probability in that frame,
        reaches this [default 0.05]; the others cannot reach the top-k in practice.
    token_class_weight, token_focal_alpha, token_focal_gamma: the token class head that
        ranks tokens for the local queries learns from a sigmoid focal loss on every token
        against the class of the object covering it [default: the paper does not say how
        it learns; weight 2 as the frame class term, alpha 0.25, gamma 2].
    reduced_supervision: skip the loss on 1 to T-2 random frames of each clip, never the
        last (§3.2, +0.6 AP on OVIS); matching still sees every frame.
    """

    aligner_layers: int = 3
    aligner_ffn_dim: int | None = None
    aligner_heads: int | None = None
    box_embed_layers: int = 2
    top_k: int = 10
    mask_score_floor: float = 0.05
    token_class_weight: float = 2.0
    token_focal_alpha: float = 0.25
    token_focal_gamma: float = 2.0
    reduced_supervision: bool = True

    def __post_init__(self) -> None:
        if self.aligner_layers < 1 or self.box_embed_layers < 1 or self.top_k < 1:
            raise ValueError("aligner_layers, box_embed_layers and top_k must be >= 1")
        if not 0.0 <= self.mask_score_floor <= 1.0:
            raise ValueError(f"mask_score_floor must be in [0, 1], got {self.mask_score_floor}")
        if not 0.0 <= self.token_focal_alpha <= 1.0:
            raise ValueError(f"token_focal_alpha must be in [0, 1], got {self.token_focal_alpha}")
