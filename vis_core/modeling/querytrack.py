"""QueryTrack-style track embeddings on the frame detector's queries (reference section 1).

QueryTrack adds a tracking branch to a query detector: each query's pooled instance
feature becomes an embedding e, trained contrastively between two frames of a video
(`vis_core/losses/querytrack_criterion.py`) and matched online to the embeddings of past
tracks (`vis_core/inference/association.py`). On Mask2Former the query already is the
pooled object context, so the branch is an MLP on the decoder-normed frame queries, shared
across frames, with no output normalisation (the paper scores raw dot products).

The head reads nothing but frame queries, so it trains on a frozen detector.

Dimension letters: Q frame queries, C channels, E embedding channels, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from vis_core.modeling.head_config import QueryTrackConfig
from vis_core.modeling.layers import MLP


class QueryTrackHead(nn.Module):
    """`embed`: MLP C -> C -> ... -> E over frame queries (reference 1.2 `EmbedHead`)."""

    def __init__(self, config: QueryTrackConfig, frame_query_dim: int):
        super().__init__()
        self.config = config
        self.embed = MLP(frame_query_dim, frame_query_dim, config.embed_dim, config.mlp_layers)

    def forward(self, frame_queries: Tensor) -> Tensor:
        """frame_queries `[..., Q, C]` -> track embeddings `[..., Q, E]`."""
        return self.embed(frame_queries)


@dataclass(frozen=True)
class QueryConfidence:
    """Per query: confidence `[..., Q]` (the largest class probability, no-object left
    out: pi in the reference) and its class `[..., Q]` int64."""

    scores: Tensor
    labels: Tensor


def query_confidence(class_logits: Tensor) -> QueryConfidence:
    """Frame class logits `[..., Q, K+1]` (no-object last) -> `QueryConfidence`."""
    probability = class_logits.float().softmax(dim=-1)[..., :-1]
    scores, labels = probability.max(dim=-1)
    return QueryConfidence(scores=scores, labels=labels)
