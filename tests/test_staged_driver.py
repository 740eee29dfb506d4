"""The staged driver's bookkeeping when a call fails in an order the local runs rarely show
(Ray gives no order between the replies of one actor's calls once its process is gone): no
Ray cluster, the driver's state set by hand and `ray.get` made to fail."""

from __future__ import annotations

from typing import Any

import pytest
import ray
from ray.exceptions import ActorUnavailableError, TaskCancelledError

from workflows.corpus_job import CorpusJobConfig
from workflows.staged_pool import DECODE, FINISH, MASKS, QUEUED, StagedPool, _Call, _Video


def bare_pool() -> StagedPool:
    """A driver with one detector actor and one decoder, and no Ray behind them."""
    pool = object.__new__(StagedPool)
    pool.config = CorpusJobConfig(input_uri="in", output_uri="out")
    pool.actors, pool.decoders, pool.finishers = [None], [[None]], [[None]]
    pool._calls, pool._decoding = {}, {}
    pool._begin([])
    return pool


def on_actor(pool: StagedPool, phase: str, waiting: int) -> _Video:
    """A video given to actor 0 (as `_admit` would) and now in `phase`."""
    video = _Video(video=None, index=0, key="0.1", actor=0, phase=phase, waiting=waiting)
    video.slot = pool._free_slots[0].pop()
    pool._open[0] += 1
    pool._unfinished[0] = video
    return video


def fail_get(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def get(ref: Any) -> Any:
        raise error

    monkeypatch.setattr(ray, "get", get)


@pytest.mark.parametrize(
    "error", [TaskCancelledError(), ActorUnavailableError("gone", None)], ids=["task", "actor"]
)
def test_a_detect_call_failing_after_its_videos_finish_starts_the_video_again(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The video's `finish` was seen first (its state has left the actor: MASKS) and one of
    its `detect` calls then failed: its frames may be missing, so it starts again. (It once
    stayed in MASKS waiting for that call, and the job stopped with 'nothing in flight'.)"""
    pool = bare_pool()
    video = on_actor(pool, DECODE, waiting=1)
    pool._actor_calls[0] = 1
    call = _Call("detect", ((video, video.key),), actor=0)
    pool._release(video)  # its `finish` returned first
    video.phase = MASKS
    fail_get(monkeypatch, error)
    pool._returned(object(), call)
    assert (video.phase, video.attempt, list(pool._pending)) == (QUEUED, 2, [video])
    assert (pool._open, pool._free_slots, pool._actor_calls) == ([0], [[0]], [0])
    assert (0 in pool._recovering) == isinstance(error, ActorUnavailableError)


def test_a_finish_call_lost_with_its_actor_starts_its_video_again_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The death learnt from the `finish` itself, then from the same video's `detect` call
    whose reply was lost with the process: one new attempt, the actor's place freed once."""
    pool = bare_pool()
    video = on_actor(pool, DECODE, waiting=1)
    detect = _Call("detect", ((video, video.key),), actor=0)
    video.phase = FINISH
    finish = _Call("finish", ((video, video.key),), actor=0)
    pool._actor_calls[0] = 2
    fail_get(monkeypatch, ActorUnavailableError("gone", None))
    pool._returned(object(), finish)
    pool._returned(object(), detect)
    assert (video.phase, video.attempt, list(pool._pending)) == (QUEUED, 2, [video])
    assert (pool._open, pool._free_slots, pool._generation) == ([0], [[0]], [1])


def test_the_defect_report_names_the_unfinished_videos() -> None:
    pool = bare_pool()
    on_actor(pool, MASKS, waiting=1)
    assert "video 0 attempt 1 masks on actor 0 (generation 0): 1 calls" in pool._state()
