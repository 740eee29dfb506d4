"""The staged corpus job: decoding, the device and the masks in separate stages, with bounded
queues between them.

    DecoderActors --chunks--> DetectorActor pool --mask logits--> FinisherActors: masks
    (CPU, one per open          (one per GPU; batches                  (CPU)  |
     video)                      frames across videos; VITA)                  v
                                                                  FinisherActors: commits

The driver (`StagedPool.run`) holds every queue and moves references only: frames, logits
and masks stay in the object store. A video is given to one detector actor, which keeps its
state on the device (frame queries; mask features while the video is short). Its frames
come from a streaming decoder (one per video the actor holds), resized to the network's
input; the driver hands an actor the ready chunks of all its videos together (up to
`batch_frames`), so one detector call can hold several videos' frames. After a video's
last chunk the actor runs VITA and returns the mask logits of the selected instances, one
object per chunk (windows around the masks); a long video is decoded again and its mask
logits come chunk by chunk from the second pass. Finisher actors make the masks at the
original size and their RLE, then the rows, and commit them with the single-actor path's
`TableCommitter` protocol.

Bounds (`StagedOptions`): videos per detector actor (so decoders, and mask features on the
device), calls queued per actor, decoded chunks per video (generator backpressure plus the
driver's count), finishers (one mask chunk or commit each at a time) and mask logits
waiting, commits running. The stage actors ask Ray for no CPU, since their number is
bounded here (a decoder paused by backpressure would otherwise hold a CPU the finishers
need: on a 2-CPU node that stalls the job), and live on their detector actor's node: their
data is there, and it is that node's CPUs that must feed its GPU.

Failures: a video that cannot be decoded or segmented gets its `failed` row from the commit
actor, with the single-actor path's message; so does one whose decoding runs over its time
limit (`TimeLimit`, checked by the driver while the video's frames are being read, as the
single path checks it whenever the model waits for a frame). A detector actor that dies
is restarted by Ray; the videos it held, like a video whose decoder died, start again from
their first frame, up to `max_attempts` times, then get a `failed` row that says so. Commits are
idempotent (claims), so nothing is duplicated. An interrupted job waits for its commits in
flight, cancels the rest and stops its actors.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vis_core.corpus.detector_stage import FAILED, LONG, OK, RETRY, DetectorReport
from vis_core.corpus.listing import CorpusVideo
from vis_core.corpus.process import ProcessOptions
from vis_core.corpus.time_limit import Deadline
from vis_core.modeling.vita_model import VitaModel
from vis_core.tables.commit import TableCommitter
from workflows.corpus_job import CorpusJobConfig, VideoOutcome, _replace, record_failure
from workflows.stage_workers import CommitJob, DecoderActor, DetectorActor, FinisherActor

logger = logging.getLogger(__name__)

# A video's phases; its state is on its detector actor from DECODE to CLOSE.
QUEUED, DECODE, FINISH, SECOND, CLOSE, MASKS, COMMIT = (
    "queued",
    "decode",
    "finish",
    "second",
    "close",
    "masks",
    "commit",
)
ON_ACTOR = (DECODE, FINISH, SECOND, CLOSE)
COMMIT_WAIT_S = 60.0  # how long an interrupted job waits for its commits in flight
PING_INTERVAL_S = 0.5  # how often a dead detector actor is asked whether it is back


@dataclass(eq=False)
class _Video:
    """A video as the driver follows it; `key` names this attempt on its actor."""

    video: CorpusVideo
    index: int
    attempt: int = 1
    phase: str = QUEUED
    key: str = ""
    actor: int = -1
    slot: int = -1  # its decoder among its actor's
    generation: int = 0  # of its actor when given to it
    started: float = 0.0  # time.time() of the first attempt
    generator: Any = None  # its decoder's stream of the current pass
    items: int = 0  # items of the current pass handed to the actor
    waiting: int = 0  # of those, the ones whose call has not returned
    slots: list[Any] = field(default_factory=list)  # mask logits refs from `finish`
    reports: list[DetectorReport] = field(default_factory=list)
    queued_masks: int = 0  # mask logits waiting for a finisher
    running_masks: int = 0  # mask logits on a finisher
    encoded: list[Any] = field(default_factory=list)  # encoded chunk refs, in frame order
    failure: str | None = None
    deadline: Deadline | None = None  # of the current attempt


@dataclass(frozen=True)
class _Op:
    """A call waiting for a detector actor: detect, finish, second or close."""

    kind: str
    video: _Video
    key: str
    ref: Any = None
    first: bool = False  # a pass's first item (its header)


@dataclass(frozen=True)
class _Call:
    """A call, task or commit in flight."""

    kind: str
    videos: tuple[tuple[_Video, str], ...]  # (video, its key when called)
    actor: int = -1
    generation: int = 0
    first: bool = False
    result: Any = None  # a second pass's mask logits
    finisher: int = -1


class StagedPool:
    """A fixed pool of `DetectorActor`s with the decoders and finishers around
    them (see the module docstring); `run` and `shutdown` as `_WorkerPool`'s."""

    def __init__(
        self,
        config: CorpusJobConfig,
        model_ref: Any,
        options: ProcessOptions,
        job_id: str,
        onnx_ref: Any,
        model: VitaModel,
    ):
        import ray

        self.config = config
        self.options = options
        self.model_ref = model_ref  # held: a restarted actor reads the model from it
        staged = config.staged
        self.chunk_frames = model.config.inference.detector_chunk_frames
        batch_frames = staged.batch_frames or 2 * self.chunk_frames
        self.batch_chunks = max(1, batch_frames // self.chunk_frames)
        self.input_config = model.config.input
        resources = ray.cluster_resources()
        count, actor_cpus, actor_options = _actor_plan(config, resources)
        remote = ray.remote(DetectorActor).options(
            **actor_options, max_restarts=-1, max_task_retries=0
        )
        self.actors = [
            remote.remote(
                model_ref,
                options,
                config.use_gpu,
                max(1, int(actor_cpus)),
                batch_frames,
                config.detector_backend,
                onnx_ref,
                config.standin,
            )
            for _ in range(count)
        ]
        self.nodes = [node for node, _ in ray.get([a.where.remote() for a in self.actors])]
        free_cpus = int(resources.get("CPU", 1) - count * actor_cpus)
        per_actor = max(1, (staged.finishers or max(1, free_cpus)) // count)
        self.finisher_count = per_actor * count
        self.mask_backlog = staged.mask_backlog or 2 * self.finisher_count
        stage_options = {"num_cpus": 0, "max_restarts": -1}
        self.decoders = [
            [
                self._on(DecoderActor, index, stage_options)
                for _ in range(staged.videos_per_detector)
            ]
            for index in range(count)
        ]
        finisher_options = {**stage_options, "max_task_retries": 2}  # their calls are pure
        self.finishers = [
            [self._on(FinisherActor, index, finisher_options) for _ in range(per_actor)]
            for index in range(count)
        ]
        self.long_video_frames = model.config.inference.long_video_frames
        class_names = tuple(model.config.class_names)
        self.job = CommitJob(options, config.output_uri, job_id, _replace(config), class_names)
        self._calls: dict[Any, _Call] = {}
        self._decoding: dict[Any, _Video] = {}  # generator -> its video
        self._pending: deque[_Video] = deque()
        logger.info(
            "staged pipeline: %d detector actors (%s CPUs each), %d finishers, detector "
            "calls of up to %d frames",
            count,
            actor_cpus,
            self.finisher_count,
            batch_frames,
        )

    def run(
        self, videos: Iterable[CorpusVideo], committer: TableCommitter
    ) -> Iterator[VideoOutcome]:
        """Yield one `VideoOutcome` per video, in completion order; `videos` is read as
        the actors have room (a streamed listing is never held whole)."""
        import ray

        self._begin(videos)
        while self._admit() or self._unfinished:
            self._enforce_time_limits()
            self._dispatch()
            self._ping_recovering()
            waitables = [*self._calls, *self._pulling()]
            due = min((t for t in self._recovering.values() if t < float("inf")), default=None)
            if (limit := self._next_time_limit()) is not None:
                due = limit if due is None else min(due, limit)
            timeout = None if due is None else max(0.0, due - time.monotonic())
            if not waitables:
                if timeout is None:
                    raise RuntimeError(
                        f"the staged pipeline has nothing in flight (a defect): {self._state()}"
                    )
                time.sleep(timeout)
                continue
            ready, rest = ray.wait(waitables, num_returns=1, timeout=timeout, fetch_local=False)
            if ready and rest:  # and whatever else is ready by now
                ready += ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=False)[0]
            for waitable in ready:
                if waitable in self._decoding:
                    self._next_item(self._decoding[waitable])
                    continue
                call = self._calls.pop(waitable, None)
                if call is None:  # a stream dropped by an earlier result of this batch
                    continue
                if call.kind in ("mask", "commit"):
                    self._finisher_load[call.actor][call.finisher] -= 1
                if call.kind == "commit":
                    video = call.videos[0][0]
                    self._unfinished.pop(video.index, None)
                    yield self._committed(waitable, video, committer)
                elif call.kind == "mask":
                    self._masked(*call.videos[0])
                elif call.kind == "ping":
                    self._pinged(waitable, call.actor)
                else:
                    self._returned(waitable, call)

    def _begin(self, videos: Iterable[CorpusVideo]) -> None:
        """The driver's state for a run over `videos`."""
        actors = len(self.actors)
        self._listing = iter(enumerate(videos))
        self._pending: deque[_Video] = deque()  # videos started again
        self._ops: list[deque[_Op]] = [deque() for _ in range(actors)]
        self._actor_calls = [0] * actors
        self._open = [0] * actors  # videos whose state is on each actor
        self._generation = [0] * actors  # bumped when an actor is found dead
        self._recovering: dict[int, float] = {}  # dead actor -> when to ask it again
        self._mask_queue: deque[tuple[_Video, str, Any]] = deque()
        self._finisher_load = [[0] * len(f) for f in self.finishers]
        self._free_slots = [list(range(len(d))) for d in self.decoders]
        self._commit_queue: deque[_Video] = deque()
        self._commits_running = 0
        self._unfinished: dict[int, _Video] = {}  # taken from the listing, not committed

    def shutdown(self) -> None:
        """Cancel what is queued, wait for the commits in flight, stop the actors."""
        import ray

        for generator in list(self._decoding):
            ray.cancel(generator)
        commits = [ref for ref, call in self._calls.items() if call.kind == "commit"]
        for ref, call in self._calls.items():
            if call.kind == "mask":
                ray.cancel(ref)
        if commits:  # a commit landing after the job has returned would surprise its caller
            ray.wait(commits, num_returns=len(commits), timeout=COMMIT_WAIT_S)
        stage_actors = [a for group in (*self.decoders, *self.finishers) for a in group]
        for actor in [*self.actors, *stage_actors]:
            ray.kill(actor, no_restart=True)

    def _state(self) -> str:
        """The driver's queues, for a report of a defect."""
        return (
            f"{len(self._unfinished)} videos unfinished "
            f"({', '.join(map(_describe, self._unfinished.values()))}), "
            f"{len(self._pending)} to start again, "
            f"on the actors {self._open} (free decoders {list(map(len, self._free_slots))}), "
            f"ops queued {list(map(len, self._ops))}, recovering {self._recovering}, "
            f"masks queued {len(self._mask_queue)}, commits queued {len(self._commit_queue)}"
        )

    # Scheduling.

    def _admit(self) -> bool:
        """Give videos (started again first, then the listing's) to the actors holding the
        fewest, up to their bound, while the masks and commits keep up (else the devices
        wait: the backpressure). False once the listing is done and nothing is queued."""
        staged = self.config.staged
        while True:
            if len(self._mask_queue) >= self.mask_backlog:
                return True
            if len(self._commit_queue) >= 2 * staged.commit_tasks:
                return True
            alive = [a for a in range(len(self.actors)) if a not in self._recovering]
            actor = min(alive, key=self._open.__getitem__, default=None)
            if actor is None or not self._free_slots[actor]:
                return True
            if self._pending:
                video = self._pending.popleft()
            elif (listed := next(self._listing, None)) is not None:
                video = _Video(listed[1], listed[0])
                self._unfinished[video.index] = video
            else:
                return False
            video.actor, video.generation = actor, self._generation[actor]
            video.slot = self._free_slots[actor].pop()
            video.key = f"{video.index}.{video.attempt}"
            video.started = video.started or time.time()
            video.deadline = self.options.time_limit.start()
            video.reports, video.encoded, video.slots = [], [], []
            video.queued_masks = video.running_masks = 0
            self._open[actor] += 1
            self._start_pass(video, DECODE)

    def _start_pass(self, video: _Video, phase: str) -> None:
        video.phase, video.items, video.waiting = phase, 0, 0
        decoder = self.decoders[video.actor][video.slot]
        backpressure = self.config.staged.chunks_per_video
        video.generator = decoder.decode_pass.options(
            _generator_backpressure_num_objects=backpressure
        ).remote(
            video.video,
            self.options.limits,
            self.input_config,
            self.chunk_frames,
            self.config.staged.decode_threads,
        )
        self._decoding[video.generator] = video

    def _on(self, actor_class: type, index: int, options: dict[str, Any]) -> Any:
        """A stage actor on the node of detector actor `index`."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        near = NodeAffinitySchedulingStrategy(self.nodes[index], soft=True)
        return ray.remote(actor_class).options(**options, scheduling_strategy=near).remote()

    def _finisher(self, video: _Video) -> tuple[Any, int]:
        """The least busy finisher of the video's detector actor, and its index."""
        load = self._finisher_load[video.actor]
        index = min(range(len(load)), key=load.__getitem__)
        load[index] += 1
        return self.finishers[video.actor][index], index

    def _pulling(self) -> list[Any]:
        """The decoders whose next item is wanted now (bounded per video; a long
        video's second pass also waits for the finishers to catch up)."""
        staged = self.config.staged
        backlog = len(self._mask_queue) < self.mask_backlog
        return [
            generator
            for generator, video in self._decoding.items()
            if video.waiting < staged.chunks_per_video and (video.phase == DECODE or backlog)
        ]

    def _next_item(self, video: _Video) -> None:
        try:
            ref = next(video.generator)
        except StopIteration:  # the pass has ended
            del self._decoding[video.generator]
            video.generator = None
            kind = "finish" if video.phase == DECODE else "close"
            video.phase = FINISH if video.phase == DECODE else CLOSE
            self._ops[video.actor].append(_Op(kind, video, video.key))
            return
        kind = "detect" if video.phase == DECODE else "second"
        if video.items:  # a chunk (the first item is the header): its frames' allowance
            video.deadline.advance(self.chunk_frames)
        self._ops[video.actor].append(_Op(kind, video, video.key, ref, first=video.items == 0))
        video.items += 1
        video.waiting += 1

    def _dispatch(self) -> None:
        """Calls to the detector actors and the finishers, up to their bounds."""
        staged = self.config.staged
        for index, actor in enumerate(self.actors):
            if index in self._recovering:
                continue
            ops = self._ops[index]
            while ops and self._actor_calls[index] < staged.calls_per_detector:
                op = ops.popleft()
                if op.kind == "detect":
                    batch = [op]
                    while ops and ops[0].kind == "detect" and len(batch) < self.batch_chunks:
                        batch.append(ops.popleft())
                    ref = actor.detect.remote([(o.key, o.ref) for o in batch])
                    self._call(ref, "detect", [(o.video, o.key) for o in batch], index)
                elif op.kind == "finish":
                    slots = self._slots(op.video)
                    refs = actor.finish.options(num_returns=1 + slots).remote(op.key, slots)
                    report, *op.video.slots = refs if slots else [refs]
                    self._call(report, "finish", [(op.video, op.key)], index)
                elif op.kind == "second":  # (done, mask logits): errors without fetching
                    done, logits = actor.second_pass.options(num_returns=2).remote(op.key, [op.ref])
                    self._call(done, "second", [(op.video, op.key)], index, op.first, logits)
                else:
                    self._call(actor.close.remote(op.key), "close", [(op.video, op.key)], index)
                self._actor_calls[index] += 1
        busy = 2 * self.finisher_count  # one running and one next on each finisher
        while self._mask_queue and sum(map(sum, self._finisher_load)) < busy:
            video, key, ref = self._mask_queue.popleft()
            if video.key != key:
                continue  # the video started again
            finisher, index = self._finisher(video)
            encoded = finisher.encode.remote(ref)
            video.encoded.append(encoded)
            video.queued_masks -= 1
            video.running_masks += 1
            self._calls[encoded] = _Call("mask", ((video, key),), video.actor, finisher=index)
        while self._commit_queue and self._commits_running < staged.commit_tasks:
            video = self._commit_queue.popleft()
            finisher, index = self._finisher(video)
            ref = finisher.commit.remote(
                self.job, video.video, video.reports, video.started, video.failure, *video.encoded
            )
            self._calls[ref] = _Call("commit", ((video, video.key),), video.actor, finisher=index)
            self._commits_running += 1

    def _slots(self, video: _Video) -> int:
        """How many mask logits `finish` may give: one per chunk (the first item is the
        header), none when the chunks already make a long video (every chunk but the last
        is whole)."""
        chunks = max(0, video.items - 1)
        if (chunks - 1) * self.chunk_frames >= self.long_video_frames:
            return 0
        return chunks

    def _call(
        self,
        ref: Any,
        kind: str,
        videos: list[tuple[_Video, str]],
        actor: int,
        first: bool = False,
        result: Any = None,
    ) -> None:
        generation = self._generation[actor]
        self._calls[ref] = _Call(kind, tuple(videos), actor, generation, first, result)

    # Results.

    def _returned(self, ref: Any, call: _Call) -> None:
        """An actor call has returned."""
        import ray
        from ray.exceptions import RayActorError, RayError

        self._actor_calls[call.actor] -= 1
        try:
            value = ray.get(ref)
        except RayError as error:
            if isinstance(error, RayActorError):
                self._actor_died(call, error)
            # The call's result is lost: its videos start again, even one whose `finish`
            # has been seen first (it has left the actor but waits for this call).
            for video, key in call.videos:
                if video.key == key and video.phase in (*ON_ACTOR, MASKS):
                    self._again(video, error)
            return
        live = [video for video, key in call.videos if video.key == key]
        if call.kind == "detect":
            for video in live:
                video.waiting -= 1
                self._maybe_commit(video)  # its finish may have been seen first
        elif live and call.kind == "second":
            (video,) = live
            video.waiting -= 1
            if not call.first:  # a pass's first item is its header: no logits
                self._queue_masks(video, [call.result])
            self._maybe_commit(video)
        elif live and call.kind == "finish":
            self._finished(live[0], value)
        elif live:
            self._closed(live[0], value)

    def _finished(self, video: _Video, report: DetectorReport) -> None:
        if report.status == RETRY:
            self._again(video, RuntimeError(report.error))
            return
        video.reports = [report]
        if report.status == LONG:
            video.slots = []
            self._start_pass(video, SECOND)
            return
        self._release(video)
        if report.status == OK:
            self._queue_masks(video, video.slots[: report.chunks])
        video.slots = []
        video.phase = MASKS
        self._maybe_commit(video)

    def _closed(self, video: _Video, report: DetectorReport) -> None:
        if report.status == RETRY:
            self._again(video, RuntimeError(report.error))
            return
        video.reports.append(report)
        self._release(video)
        video.phase = MASKS
        self._maybe_commit(video)

    def _queue_masks(self, video: _Video, refs: list[Any]) -> None:
        for ref in refs:
            self._mask_queue.append((video, video.key, ref))
        video.queued_masks += len(refs)

    def _release(self, video: _Video) -> None:
        """The video's state has left its detector actor: its place and decoder are free."""
        self._open[video.actor] -= 1
        self._free_slots[video.actor].append(video.slot)

    def _masked(self, video: _Video, key: str) -> None:
        if video.key == key:
            video.running_masks -= 1
            self._maybe_commit(video)

    def _maybe_commit(self, video: _Video) -> None:
        """Queue the commit once the video's masks are made (a finisher never waits on
        another's results, so none can wait on a commit queued behind it)."""
        if video.phase != MASKS or video.queued_masks or video.running_masks or video.waiting:
            return
        if any(report.status == FAILED for report in video.reports):
            video.encoded = []  # no masks for a failed row
        video.phase = COMMIT
        self._commit_queue.append(video)

    def _committed(self, ref: Any, video: _Video, committer: TableCommitter) -> VideoOutcome:
        import ray
        from ray.exceptions import RayError

        self._commits_running -= 1
        try:
            return ray.get(ref)
        except RayError as error:  # a mask or commit call failed every time
            return record_failure(self.config, self.options, committer, video.video, error)

    def _actor_died(self, failed: _Call, error: Exception) -> None:
        """Every video whose state was on the actor's lost incarnation starts again; the
        actor gets nothing more until it answers (Ray restarts it; a call sent meanwhile
        would fail as well, and count against its videos' attempts). `failed` is the call
        that told: its videos may have nothing else in flight (a `finish` or `close`)."""
        actor, generation = failed.actor, failed.generation
        if generation != self._generation[actor]:
            return  # already seen
        self._generation[actor] += 1
        self._recovering[actor] = time.monotonic()
        logger.warning("detector actor %d died: %s", actor, str(error).splitlines()[0][:200])
        lost = {id(video): video for ops in self._ops for op in ops for video in [op.video]}
        for call in [failed, *self._calls.values()]:
            lost.update((id(video), video) for video, _ in call.videos)
        lost.update((id(video), video) for video in self._decoding.values())
        for video in lost.values():
            if video.actor == actor and video.generation == generation and video.phase in ON_ACTOR:
                self._again(video, error)

    def _ping_recovering(self) -> None:
        """Ask the dead actors whose time has come whether they are back."""
        now = time.monotonic()
        for actor, due in list(self._recovering.items()):
            if due <= now:
                self._recovering[actor] = float("inf")  # until the answer
                self._calls[self.actors[actor].where.remote()] = _Call("ping", (), actor)

    def _pinged(self, ref: Any, actor: int) -> None:
        import ray
        from ray.exceptions import RayError

        try:
            self.nodes[actor] = ray.get(ref)[0]  # it may have come back elsewhere
        except RayError:  # still restarting
            self._recovering[actor] = time.monotonic() + PING_INTERVAL_S
            return
        del self._recovering[actor]
        logger.info("detector actor %d is back", actor)

    def _next_time_limit(self) -> float | None:
        """When the first video being read runs out of time (`time.monotonic()`)."""
        remaining = min((v.deadline.remaining() for v in self._decoding.values()), default=None)
        if remaining is None or remaining == float("inf"):
            return None
        return time.monotonic() + remaining

    def _enforce_time_limits(self) -> None:
        """Give up the videos still being read past their time limit: a `failed` row, as
        on the single path (what runs after the last frame, VITA and the masks, is not
        interrupted there either)."""
        for video in [v for v in self._decoding.values() if v.deadline.remaining() <= 0]:
            self.actors[video.actor].abandon.remote(video.key)  # after its calls in flight
            message = f"VideoTimeLimitError: {video.deadline.describe()}"
            self._drop(video)
            video.failure = message
            video.phase = COMMIT
            self._commit_queue.append(video)

    def _drop(self, video: _Video) -> None:
        """Forget the current attempt of `video`: its decoder, its place on its actor and
        its queued calls (if it has not left the actor yet); what is still in flight for it
        is stale."""
        import ray

        if video.generator is not None:
            ray.cancel(video.generator)
            del self._decoding[video.generator]
            video.generator = None
        if video.phase in ON_ACTOR:
            self._release(video)
            ops = self._ops[video.actor]
            self._ops[video.actor] = deque(op for op in ops if op.video is not video)
        video.key = ""
        video.slots, video.encoded, video.reports = [], [], []

    def _again(self, video: _Video, error: Exception) -> None:
        """Start `video` again from its first frame, or give it up as failed."""
        self._drop(video)
        if video.attempt >= self.config.max_attempts:
            video.failure = (
                f"the worker failed {self.config.max_attempts} times while processing this "
                f"video: {type(error).__name__}: {str(error).splitlines()[0][:500]}"
            )
            video.phase = COMMIT
            self._commit_queue.append(video)
            return
        video.attempt += 1
        video.phase = QUEUED
        self._pending.appendleft(video)


def _describe(video: _Video) -> str:
    """Where `video` stands, for the defect report."""
    return (
        f"video {video.index} attempt {video.attempt} {video.phase} on actor {video.actor} "
        f"(generation {video.generation}): {video.waiting} calls, {video.queued_masks} masks "
        f"queued, {video.running_masks} running"
    )


def _actor_plan(config: CorpusJobConfig, resources: dict[str, float]) -> tuple[int, float, dict]:
    """(actors, CPUs of each, their Ray options): one per GPU with `use_gpu`, 1 CPU each; a
    stand-in's actor asks for no CPU (its device sleeps); on CPUs alone, one actor with
    every CPU of the cluster but one, left to the stages."""
    if config.use_gpu:
        count = config.workers or max(1, int(resources.get("GPU", 0)))
        cpus = float(config.cpus_per_worker or 1)
        return count, cpus, {"num_cpus": cpus, "num_gpus": 1}
    count = config.workers or 1
    if config.standin is not None:
        cpus = float(config.cpus_per_worker or 0)
    else:
        cpus = float(config.cpus_per_worker or max(1, int(resources.get("CPU", 1)) // count - 1))
    return count, cpus, {"num_cpus": cpus}
