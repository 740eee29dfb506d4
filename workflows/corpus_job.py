"""The corpus job: every video under an input prefix -> the three tables under an output.

The driver streams the corpus listing, drops the videos already committed by this run
(`vis_core.corpus.plan`: checked against a compact set of the run's commits, so neither
the listing nor the commits are held whole), and hands the rest, one video per call, to a
fixed pool of `SegmentWorker` actors (one per GPU, or CPU actors sized to the node when
there is none).
Each call decodes the video in a prefetching thread, runs the detector, VITA and the
masks (the two-pass path for long videos), and commits the video's rows itself, so no
frame, feature or mask crosses the network. At most `in_flight_per_worker` videos wait on
each actor (backpressure). A worker that dies is restarted by Ray and its videos are
retried; commits are idempotent, so a retried video is never duplicated, and a video that
kills its worker again becomes a `failed` row.

Runs of the same job may overlap on one output (a command started twice, a retried Ray
job while the first driver lives): a video's first commit stays and a later one backs off
(`Replace.NEVER`; `Replace.FAILED` with `retry_failed`), and `recover` removes only what no
live run can own (see `vis_core.tables.commit`). A video that another run committed while
this one processed it counts as skipped.

Storage faults: `vis_core.storage` retries transient ones. A video whose object still
cannot be read gets a `failed` row (`VideoReadError`); a commit that still fails is retried
from the driver as a `failed` row naming the error; when the listing or the tables still
cannot be read or written, the job stops with `StorageFailure` (what and where, never a
credential). Nothing partial is committed either way: a commit is whole or absent.

`run_id` is the job's identity: a digest of the model file, the inference options and
the decode limits. The same job run again has the same `run_id` and skips what it
committed; another model is another run, with its own rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vis_core.corpus.frame_queries import StoredVideo, check_dtype
from vis_core.corpus.listing import CorpusNotFoundError, CorpusVideo, iter_corpus
from vis_core.corpus.plan import CorpusPlan
from vis_core.corpus.process import ProcessOptions, process_video
from vis_core.corpus.reassociate import (
    check_method,
    list_stored_videos,
    process_stored_video,
    source_run,
)
from vis_core.corpus.stage_seconds import StageSeconds
from vis_core.corpus.time_limit import TimeLimit
from vis_core.export.backend import DetectorBackend, apply_detector_backend, onnx_detector_bytes
from vis_core.inference.detector_source import detector_digest
from vis_core.methods import build_segmenter
from vis_core.modeling.model_file import model_from_bytes, read_model_bytes
from vis_core.storage import STORAGE_ERRORS, storage_error
from vis_core.tables.commit import CommitResult, Replace, TableCommitter
from vis_core.tables.rows import failed_rows
from vis_core.tables.schema import STATUS_OK
from vis_core.video.decode import DecodeLimits
from workflows.progress import JobProgress
from workflows.ray_cluster import ensure_ray
from workflows.staged_options import PIPELINES, DeviceStandIn, StagedOptions

if TYPE_CHECKING:
    import torch

    from vis_core.modeling.vita_model import VitaModel

logger = logging.getLogger(__name__)


class StorageFailure(RuntimeError):
    """The job stopped: the input could not be listed or the tables could not be read or
    written, after the storage's retries (the message says which, where and why)."""


def _storage_failure(what: str, uri: str, error: BaseException) -> StorageFailure:
    return StorageFailure(f"cannot {what} {uri}: {storage_error(error)}")


def _listing(input_uri: str) -> Iterator[CorpusVideo]:
    """The streamed listing (`iter_corpus`: CorpusNotFoundError at once); a storage error,
    at once or on the way, stops the job with its reason."""
    try:
        videos = iter_corpus(input_uri)
    except CorpusNotFoundError:
        raise
    except STORAGE_ERRORS as error:
        raise _storage_failure("list the input", input_uri, error) from error
    return _guarded(videos, input_uri)


def _guarded(videos: Iterator[CorpusVideo], input_uri: str) -> Iterator[CorpusVideo]:
    try:
        yield from videos
    except STORAGE_ERRORS as error:
        raise _storage_failure("list the input", input_uri, error) from error


@dataclass(frozen=True)
class CorpusJobConfig:
    """One corpus job.

    model_uri: a model file (path, URI or `models:/NAME/VERSION|@ALIAS`); None for the
        shipped model. workers: segmentation actors (None: one per GPU with `use_gpu`,
        else one per `cpus_per_worker` of the cluster's CPUs); cpus_per_worker: CPUs (and
        torch threads) of each actor (None: 1 with a GPU, else every CPU of a node).
    retry_failed: process again the videos this run recorded as failed.
    time_limit: how long one video may take (`vis_core.corpus.time_limit`); not part of
        the run's identity.
    max_attempts: tries per video when its worker dies (a crash, a kill, out of memory).
    tracking_uri / experiment: where the job records itself in MLflow (None: the local
        default store); track=False records nothing.
    detector_backend: what runs the detector (`vis_core.export.backend`); an ONNX graph is
        read or exported once, on the driver, and shipped to the workers like the model.
    method: the temporal method (`vis_core.methods`: vita, per-frame or an online head
        the model file carries).
    pipeline: "single" (one actor per device does everything for a video), "staged"
        (decoding, the device and the masks in separate stages: `workflows/staged_pool.py`;
        VITA only) or "auto": staged with a GPU or a device stand-in and VITA, else single
        (on CPUs alone the model is the bottleneck, and one actor with every CPU of a node
        runs it fastest: docs/staged_pipeline.md). staged: its bounds.
    standin: replace the model on the device by a stand-in with a fixed time per frame
        (for measuring the pipeline; its rows are another run's).
    frame_queries: also write each frame's detector outputs to the `frame_queries` table,
        in this dtype ("float16" or "float32"; None: not written). Part of the run's
        identity; the single pipeline only.
    from_frame_queries: instead of decoding `input_uri`, re-associate the `ok` videos of
        the run with frame queries under this output prefix (`source_run`, or the only
        one there) with `method`, without the detector (`vis_core.corpus.reassociate`).
    """

    input_uri: str
    output_uri: str
    model_uri: str | None = None
    use_gpu: bool = False
    workers: int | None = None
    cpus_per_worker: int | None = None
    in_flight_per_worker: int = 2
    retry_failed: bool = False
    max_attempts: int = 2
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    time_limit: TimeLimit = field(default_factory=TimeLimit)
    ray_address: str | None = None
    track: bool = True
    tracking_uri: str | None = None
    experiment: str = "vis-process"
    progress: bool = True
    detector_backend: DetectorBackend = field(default_factory=DetectorBackend)
    method: str = "vita"
    pipeline: str = "auto"
    staged: StagedOptions = field(default_factory=StagedOptions)
    standin: DeviceStandIn | None = None
    frame_queries: str | None = None
    from_frame_queries: str | None = None
    source_run: str | None = None

    def __post_init__(self) -> None:
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got {self.pipeline!r}")
        if self.method != "vita" and (self.pipeline == "staged" or self.standin is not None):
            raise ValueError(
                f"the staged pipeline and the device stand-in run VITA only, not {self.method!r}"
            )
        if self.frame_queries is not None:
            check_dtype(self.frame_queries)
        stored = self.frame_queries is not None or self.from_frame_queries is not None
        if stored and (self.pipeline == "staged" or self.standin is not None):
            raise ValueError(
                "--frame-queries and --from-frame-queries run on the single pipeline only "
                "(--pipeline single), without a device stand-in"
            )
        if self.from_frame_queries is not None:
            check_method(self.method)
            if self.input_uri:
                raise ValueError("give --input or --from-frame-queries, not both")
            if self.frame_queries is not None:
                raise ValueError("--from-frame-queries reads frame queries: no --frame-queries")
            if self.detector_backend.kind != "torch":
                raise ValueError("--from-frame-queries runs no detector: no --detector-backend")
        elif not self.input_uri:
            raise ValueError("give --input (videos) or --from-frame-queries (an earlier output)")
        if self.source_run is not None and self.from_frame_queries is None:
            raise ValueError("--source-run goes with --from-frame-queries")

    @property
    def staged_pipeline(self) -> bool:
        """Whether the job runs the staged pipeline (see `pipeline`)."""
        if self.pipeline == "auto":
            stored = self.frame_queries is not None or self.from_frame_queries is not None
            return (
                self.method == "vita" and (self.use_gpu or self.standin is not None) and not stored
            )
        return self.pipeline == "staged"


@dataclass(frozen=True)
class VideoOutcome:
    """What a worker reports for one committed video (the rows stay in storage)."""

    video_id: str
    status: str
    error: str | None
    num_frames: int
    num_tracklets: int
    seconds: float
    worker_pid: int
    worker_peak_memory_bytes: int = 0
    committed_elsewhere: bool = False  # another run committed the video first: not counted
    stages: StageSeconds | None = None  # CPU seconds by stage (the staged pipeline's)


@dataclass(frozen=True)
class CorpusJobSummary:
    run_id: str
    model: str
    output_uri: str
    videos: int  # in the corpus
    skipped: int  # already committed by this run (or by a concurrent run meanwhile)
    ok: int
    failed: int
    tracklets: int
    frames: int
    seconds: float
    failures: tuple[tuple[str, str], ...] = ()  # (video_id, error) of this job's failures
    mlflow_run_id: str | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        lines = [
            f"run {self.run_id} ({self.model}) -> {self.output_uri}",
            f"videos: {self.videos} in the corpus, {self.skipped} already committed, "
            f"{self.ok} ok, {self.failed} failed",
            f"tracklets: {self.tracklets}; frames: {self.frames} in {self.seconds:.1f} s "
            f"({self.frames_per_second:.1f} frames/s)",
        ]
        lines += [f"  failed: {video_id}: {error}" for video_id, error in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more failures")
        return "\n".join(lines)


OutcomeHook = Callable[[VideoOutcome], None]


def run_corpus_job(
    config: CorpusJobConfig, on_outcome: OutcomeHook | None = None
) -> CorpusJobSummary:
    """Run the job to completion (see the module docstring); `on_outcome` is called on
    the driver after each committed video."""
    import ray

    started = time.perf_counter()
    model_bytes = _model_bytes(config)
    model = model_from_bytes(model_bytes, config.model_uri or "the shipped model")
    build_segmenter(config.method, model)  # an unknown method or a missing head fails here
    source = None
    if config.from_frame_queries is not None:
        source = (
            config.from_frame_queries,
            source_run(config.from_frame_queries, config.source_run),
        )
    stored = config.frame_queries is not None or source is not None
    options = ProcessOptions(
        model=f"{model.config.name}@{hashlib.sha256(model_bytes).hexdigest()[:12]}",
        run_id=job_run_id(
            model_bytes,
            model.config.inference,
            config.limits,
            config.method,
            config.standin,
            frame_queries=config.frame_queries,
            source=source,
        ),
        method=config.method,
        limits=config.limits,
        time_limit=config.time_limit,
        frame_queries=config.frame_queries,
        detector=detector_digest(model.detector) if stored else "",
    )
    # Streamed as the workers take videos: the corpus, or the source's stored videos.
    listing: Iterable[Any] = (
        list_stored_videos(*source) if source is not None else _listing(config.input_uri)
    )
    job_id = uuid.uuid4().hex[:12]  # this job's claims (see `vis_core.tables.claims`)
    try:
        committer = TableCommitter(config.output_uri, options.run_id, job_id=job_id)
        recovered = committer.recover()
        committed = committer.committed_set()
    except STORAGE_ERRORS as error:
        raise _storage_failure("read the tables under", config.output_uri, error) from error
    if recovered:
        logger.info("removed %d files of interrupted commits", recovered)
    plan = CorpusPlan(listing, committed, config.retry_failed)
    todo = iter(plan)
    first = next(todo, None)
    outcomes: list[VideoOutcome] = []
    if first is not None:
        ensure_ray(config.ray_address)
        onnx_ref = None
        if config.detector_backend.kind == "onnx":
            onnx_ref = ray.put(onnx_detector_bytes(model, config.detector_backend))
        if config.staged_pipeline:
            from workflows.staged_pool import StagedPool

            pool: Any = StagedPool(config, ray.put(model_bytes), options, job_id, onnx_ref, model)
        else:
            pool = _WorkerPool(config, ray.put(model_bytes), options, job_id, onnx_ref)
        progress = JobProgress(plan.to_process, enabled=config.progress, final=plan.finished)
        try:
            for outcome in pool.run(itertools.chain([first], todo), committer):
                if outcome.committed_elsewhere:
                    logger.info("%s: committed by another run meanwhile", outcome.video_id)
                else:
                    outcomes.append(outcome)
                progress.total, progress.final = plan.to_process, plan.finished
                progress.update(outcome.num_frames, failed=outcome.status != STATUS_OK)
                if on_outcome is not None:
                    on_outcome(outcome)
        finally:
            progress.close()
            pool.shutdown()
    logger.info(
        "run %s: %d videos, %d processed, %d already committed",
        options.run_id,
        plan.listed,
        plan.to_process,
        plan.skipped,
    )
    summary = CorpusJobSummary(
        run_id=options.run_id,
        model=options.model,
        output_uri=config.output_uri,
        videos=plan.listed,
        skipped=plan.listed - len(outcomes),
        ok=sum(o.status == STATUS_OK for o in outcomes),
        failed=sum(o.status != STATUS_OK for o in outcomes),
        tracklets=sum(o.num_tracklets for o in outcomes),
        frames=sum(o.num_frames for o in outcomes),
        seconds=time.perf_counter() - started,
        failures=tuple((o.video_id, o.error or "") for o in outcomes if o.status != STATUS_OK),
    )
    if config.track:
        summary = dataclasses.replace(summary, mlflow_run_id=_record(config, summary))
    return summary


def job_run_id(
    model_bytes: bytes,
    inference: Any,
    limits: DecodeLimits,
    method: str = "vita",
    standin: DeviceStandIn | None = None,
    frame_queries: str | None = None,
    source: tuple[str, str] | None = None,
) -> str:
    """The run's identity: what decides the rows (model, inference options, limits,
    method, a device stand-in, the frame queries it writes, or the source it re-associates:
    output prefix and run)."""
    digest = hashlib.sha256(model_bytes)
    options: dict[str, Any] = {
        "inference": dataclasses.asdict(inference),
        "limits": dataclasses.asdict(limits),
    }
    if method != "vita" or source is not None:  # VITA's runs keep their identity of before
        options["method"] = method
    if standin is not None:
        options["standin"] = {"frame_ms": standin.frame_ms}
    if frame_queries is not None:
        options["frame_queries"] = frame_queries
    if source is not None:  # no videos are decoded: the limits do not apply
        del options["limits"]
        options["source"] = {"uri": source[0].rstrip("/"), "run_id": source[1]}
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _model_bytes(config: CorpusJobConfig) -> bytes:
    if config.model_uri is not None and config.model_uri.startswith("models:/"):
        from workflows.tracking import resolve_model_uri

        return read_model_bytes(str(resolve_model_uri(config.model_uri, config.tracking_uri)))
    return read_model_bytes(config.model_uri)


def _replace(config: CorpusJobConfig) -> Replace:
    """A commit keeps the video's commit that exists, unless retrying a failed one."""
    return Replace.FAILED if config.retry_failed else Replace.NEVER


def _elsewhere(result: CommitResult, job_id: str) -> bool:
    """Whether another job's commit of the video stayed (this job's own earlier commit,
    from a call that Ray retried, counts as this job's)."""
    return not result.won and result.claim.job != job_id


def actor_model(
    model_bytes: bytes,
    options: ProcessOptions,
    use_gpu: bool,
    threads: int,
    backend: DetectorBackend,
    onnx_bytes: bytes | None = None,
) -> tuple[VitaModel, torch.device, torch.dtype]:
    """(model, device, dtype) of a model actor: its torch threads set, the model on the GPU
    in bf16 or on the CPU in fp32, its detector run by `backend` (ONNX Runtime: from
    `onnx_bytes`, the graph the driver read or exported once)."""
    import torch

    torch.set_num_threads(max(1, threads))
    device = torch.device("cuda" if use_gpu else "cpu")
    dtype = torch.bfloat16 if use_gpu else torch.float32
    model = model_from_bytes(model_bytes, options.model, device)
    model = apply_detector_backend(model, backend, onnx_bytes)
    return model, device, dtype


class SegmentWorker:
    """A Ray actor holding the model: `process(video)` segments and commits one video."""

    def __init__(
        self,
        model_bytes: bytes,
        options: ProcessOptions,
        output_uri: str,
        use_gpu: bool,
        threads: int,
        job_id: str,
        replace: Replace,
        backend: DetectorBackend,
        onnx_bytes: bytes | None = None,
        standin: DeviceStandIn | None = None,
    ):
        import os

        model, device, dtype = actor_model(
            model_bytes, options, use_gpu, threads, backend, onnx_bytes
        )
        self.segmenter = build_segmenter(options.method, model, device=device, dtype=dtype)
        if standin is not None:  # the staged job's stand-in, run serially here
            from vis_core.inference.program_segmenter import ProgramSegmenter
            from vis_core.inference.vita_program import VitaProgram

            program = standin.program(VitaProgram(model, device=device, dtype=dtype))
            chunk_frames = model.config.inference.detector_chunk_frames
            self.segmenter = ProgramSegmenter(program, model.config.input, chunk_frames)
        self.class_names = model.config.class_names
        self.options = dataclasses.replace(options, decode_threads=max(1, threads))
        self.committer = TableCommitter(output_uri, options.run_id, job_id=job_id)
        self.replace = replace
        self.pid = os.getpid()

    def process(self, video: CorpusVideo | StoredVideo) -> VideoOutcome:
        if isinstance(video, StoredVideo):  # --from-frame-queries: no decoding, no detector
            rows = process_stored_video(video, self.segmenter, self.options, self.class_names)
        else:
            rows = process_video(video, self.segmenter, self.options, self.class_names)
        result = self.committer.commit(rows, replace=self.replace)
        videos = rows.tables["videos"]
        return VideoOutcome(
            video_id=video.video_id,
            status=rows.status,
            error=videos["error"][0].as_py(),
            num_frames=rows.num_frames,
            num_tracklets=rows.num_tracklets,
            seconds=videos["total_s"][0].as_py() or 0.0,
            worker_pid=self.pid,
            worker_peak_memory_bytes=_peak_memory_bytes(),
            committed_elsewhere=_elsewhere(result, self.committer.job_id),
        )


def _peak_memory_bytes() -> int:
    """This process's peak resident memory so far."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class _WorkerPool:
    """A fixed pool of `SegmentWorker` actors fed with bounded in-flight work."""

    def __init__(
        self,
        config: CorpusJobConfig,
        model_ref: Any,
        options: ProcessOptions,
        job_id: str,
        onnx_ref: Any = None,
    ):
        import ray

        self.config = config
        self.options = options
        self.model_ref = model_ref  # held: a restarted worker reads the model from it
        self.onnx_ref = onnx_ref
        resources = ray.cluster_resources()
        if config.use_gpu:
            cpus = config.cpus_per_worker or 1
            count = config.workers or max(1, int(resources.get("GPU", 0)))
            actor_options = {"num_cpus": cpus, "num_gpus": 1}
        else:
            cpus = config.cpus_per_worker or max(1, int(_cpus_per_node()))
            count = config.workers or max(1, int(resources.get("CPU", 1)) // cpus)
            actor_options = {"num_cpus": cpus}
        remote = ray.remote(SegmentWorker).options(
            **actor_options,
            # A dead worker comes back, and the calls it held run again on it.
            max_restarts=-1,
            max_task_retries=max(0, config.max_attempts - 1),
        )
        self.workers = [
            remote.remote(
                model_ref,
                options,
                config.output_uri,
                config.use_gpu,
                cpus,
                job_id,
                _replace(config),
                config.detector_backend,
                onnx_ref,
                config.standin,
            )
            for _ in range(count)
        ]
        logger.info("%d segmentation workers, %d CPUs each", count, cpus)

    def run(self, videos: Iterable[CorpusVideo], committer: TableCommitter):
        """Yield one `VideoOutcome` per video, in completion order; `videos` is pulled
        only as workers have room (a streamed listing is never held whole)."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        pending = iter(videos)
        more = True
        in_flight: dict[Any, tuple[int, CorpusVideo]] = {}
        load = [0] * len(self.workers)
        while more or in_flight:
            for index in sorted(range(len(self.workers)), key=load.__getitem__):
                while more and load[index] < self.config.in_flight_per_worker:
                    video = next(pending, None)
                    if video is None:
                        more = False
                        break
                    in_flight[self.workers[index].process.remote(video)] = (index, video)
                    load[index] += 1
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                index, video = in_flight.pop(ref)
                load[index] -= 1
                try:
                    yield ray.get(ref)
                except (RayActorError, RayTaskError) as error:
                    # The worker died on every attempt, or the commit itself failed.
                    yield record_failure(self.config, self.options, committer, video, error)

    def shutdown(self) -> None:
        """Stop the workers now (an interrupted job leaves no actor holding CPUs)."""
        import ray

        for worker in self.workers:
            ray.kill(worker, no_restart=True)


def record_failure(
    config: CorpusJobConfig,
    options: ProcessOptions,
    committer: TableCommitter,
    video: CorpusVideo,
    error: Exception,
) -> VideoOutcome:
    """Commit the `failed` row of a video whose workers died `max_attempts` times (or
    whose commit failed), from the driver; `StorageFailure` when that commit fails too."""
    cause = getattr(error, "cause", None)  # a RayTaskError's exception, raised in the worker
    if isinstance(cause, STORAGE_ERRORS):
        message = f"committing its rows failed: {storage_error(cause)}"[:600]
    else:
        message = (
            f"the worker failed {config.max_attempts} times while processing this "
            f"video: {type(error).__name__}: {str(error).splitlines()[0][:500]}"
        )
    record = options.record(video.video_id, video.uri)
    try:
        result = committer.commit(failed_rows(record, message), replace=_replace(config))
    except STORAGE_ERRORS as error:
        raise _storage_failure("write the tables under", config.output_uri, error) from error
    if not result.won and result.claim.status == STATUS_OK:
        message = None  # the worker committed the video before it died
    return VideoOutcome(
        video.video_id,
        result.claim.status,
        message,
        0,
        0,
        0.0,
        worker_pid=-1,
        committed_elsewhere=_elsewhere(result, committer.job_id),
    )


def _cpus_per_node() -> float:
    """CPUs of the biggest alive node (a CPU worker takes a whole node by default)."""
    import ray

    return max(
        (node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")),
        default=1,
    )


def _record(config: CorpusJobConfig, summary: CorpusJobSummary) -> str | None:
    from workflows.tracking import TrackingConfig, record_job

    try:
        return record_job(
            TrackingConfig(tracking_uri=config.tracking_uri, experiment=config.experiment),
            run_name=f"process-{summary.run_id}",
            params={
                "input": config.input_uri or config.from_frame_queries,
                "frame_queries": config.frame_queries,
                "from_frame_queries": config.from_frame_queries,
                "output": config.output_uri,
                "model": summary.model,
                "method": config.method,
                "run_id": summary.run_id,
                "use_gpu": config.use_gpu,
                "detector_backend": config.detector_backend.kind,
                "pipeline": "staged" if config.staged_pipeline else "single",
                "retry_failed": config.retry_failed,
                "limits": config.limits,
            },
            metrics={
                "videos": summary.videos,
                "videos_skipped": summary.skipped,
                "videos_ok": summary.ok,
                "videos_failed": summary.failed,
                "tracklets": summary.tracklets,
                "frames": summary.frames,
                "seconds": summary.seconds,
                "frames_per_s": summary.frames_per_second,
            },
            tags={"vis.run_id": summary.run_id, "vis.kind": "corpus-job"},
        )
    except Exception as error:  # the tables are written: a tracking outage is a warning
        logger.warning("could not record the job in MLflow: %s", error)
        return None
