"""The Ray processes of the staged corpus job: decoder, detector and finisher actors, each a
thin shell over its stage in `vis_core` (`workflows/staged_pool.py` schedules them).

- `DecoderActor.decode_pass`: a streaming generator, one per pass over a video
  (`vis_core.corpus.chunks.decode_items`): a header, then resized chunks.
- `DetectorActor`: the model on its device (`VitaProgram`, or its stand-in) behind a
  `DetectorStage`; takes chunk references and resolves them itself, so that a chunk whose
  decoding process died fails its own video only.
- `FinisherActor`: `encode` makes a chunk's masks at the original size and their RLE;
  `commit` makes a video's rows from its reports and encoded chunks and commits them with
  the `TableCommitter` protocol (so exactly once, as on the single-actor path).

The stages are actors, not tasks: they ask Ray for no CPU (their number is bounded by the
driver) and stay up for the job, where tasks past a node's CPU count would have their idle
worker processes stopped and started again, each start importing torch (a few CPU-seconds:
on 2 cores, more than the work itself). They use one torch thread each: their parallelism
is their number.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from vis_core.corpus.chunks import DecodeItem, decode_items
from vis_core.corpus.detector_stage import DetectorReport, DetectorStage
from vis_core.corpus.listing import CorpusVideo
from vis_core.corpus.process import ProcessOptions
from vis_core.corpus.stage_seconds import StageSeconds
from vis_core.corpus.staged_rows import staged_rows
from vis_core.export.backend import DetectorBackend
from vis_core.inference.mask_chunks import EncodedMaskChunk, MaskLogits, encode_mask_logits
from vis_core.modeling.config import InputConfig
from vis_core.tables.commit import Replace, TableCommitter
from vis_core.video.decode import DecodeLimits
from workflows.corpus_job import VideoOutcome, _elsewhere, _peak_memory_bytes, actor_model
from workflows.staged_options import DeviceStandIn


class DecoderActor:
    """Decodes one video at a time for a detector actor."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)

    def decode_pass(
        self,
        video: CorpusVideo,
        limits: DecodeLimits,
        input_config: InputConfig,
        chunk_frames: int,
        threads: int,
    ) -> Iterator[DecodeItem]:
        import ray

        for item in decode_items(video, limits, input_config, chunk_frames, threads):
            yield item
            if ray.get_runtime_context().is_canceled():  # the video starts again elsewhere
                return


class FinisherActor:
    """Makes masks and commits videos."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)

    def encode(self, logits: MaskLogits | None) -> EncodedMaskChunk | None:
        return None if logits is None else encode_mask_logits(logits)

    def commit(
        self,
        job: CommitJob,
        video: CorpusVideo,
        reports: Sequence[DetectorReport],
        started: float,
        failure: str | None,
        *encoded: EncodedMaskChunk | None,
    ) -> VideoOutcome:
        return commit_video(job, video, reports, started, failure, *encoded)


@dataclass(frozen=True)
class CommitJob:
    """What every commit of a job shares."""

    options: ProcessOptions
    output_uri: str
    job_id: str
    replace: Replace
    class_names: tuple[str, ...]


def commit_video(
    job: CommitJob,
    video: CorpusVideo,
    reports: Sequence[DetectorReport],
    started: float,
    failure: str | None,
    *encoded: EncodedMaskChunk | None,
) -> VideoOutcome:
    """Commit `video`'s rows; `started`: `time.time()` when it was first started."""
    cpu = time.process_time()
    rows, seconds = staged_rows(
        video, job.options, reports, encoded, job.class_names, time.time() - started, failure
    )
    committer = TableCommitter(job.output_uri, job.options.run_id, job_id=job.job_id)
    result = committer.commit(rows, replace=job.replace)
    videos = rows.tables["videos"]
    first = reports[0] if reports else DetectorReport("failed")
    return VideoOutcome(
        video_id=video.video_id,
        status=rows.status,
        error=videos["error"][0].as_py(),
        num_frames=rows.num_frames,
        num_tracklets=rows.num_tracklets,
        seconds=videos["total_s"][0].as_py() or 0.0,
        worker_pid=first.worker_pid,
        worker_peak_memory_bytes=max((r.worker_peak_memory_bytes for r in reports), default=0),
        committed_elsewhere=_elsewhere(result, job.job_id),
        stages=seconds + StageSeconds(commit=time.process_time() - cpu),
    )


class DetectorActor:
    """A Ray actor holding the model on its device (one per GPU): the detector stage."""

    def __init__(
        self,
        model_bytes: bytes,
        options: ProcessOptions,
        use_gpu: bool,
        threads: int,
        batch_frames: int,
        backend: DetectorBackend,
        onnx_bytes: bytes | None = None,
        standin: DeviceStandIn | None = None,
    ):
        from vis_core.inference.vita_program import DeviceProgram, VitaProgram

        model, device, dtype = actor_model(
            model_bytes, options, use_gpu, threads, backend, onnx_bytes
        )
        program: DeviceProgram = VitaProgram(
            model, device=device, dtype=dtype, max_batch_frames=batch_frames
        )
        if standin is not None:
            program = standin.program(program)
        self.stage = DetectorStage(program)

    def where(self) -> tuple[str, int]:
        """(node id, pid) of this actor."""
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def detect(self, items: list[tuple[str, Any]]) -> None:
        """First-pass items: (video key, reference to a `DecodeItem`), each video's in order."""
        refs = [ref for _, ref in items]
        self.stage.take(list(zip([key for key, _ in items], _resolved(refs), strict=True)))

    def finish(self, key: str, slots: int) -> Any:
        """The video's report, then `slots` mask logits (one value when `slots` is 0)."""
        report, masks = self.stage.finish(key, slots)
        report = self._signed(report)
        return (report, *masks) if slots else report

    def second_pass(self, key: str, item: list[Any]) -> tuple[bool, MaskLogits | None]:
        """(True, the mask logits of a long video's next item, given as `[reference]`):
        two objects, so that the driver learns the call is done without fetching them."""
        (resolved,) = _resolved(item)
        return True, self.stage.second_pass(key, resolved)

    def close(self, key: str) -> DetectorReport:
        return self._signed(self.stage.close(key))

    def abandon(self, key: str) -> None:
        self.stage.abandon(key)

    def _signed(self, report: DetectorReport) -> DetectorReport:
        return dataclasses.replace(
            report, worker_pid=os.getpid(), worker_peak_memory_bytes=_peak_memory_bytes()
        )


def _resolved(refs: list[Any]) -> list[Any]:
    """The objects of `refs`; the error instead of an object that is lost (its maker died)."""
    import ray
    from ray.exceptions import RayError

    try:
        return ray.get(refs)
    except RayError:
        values: list[Any] = []
        for ref in refs:
            try:
                values.append(ray.get(ref))
            except RayError as error:
                values.append(error)
        return values
