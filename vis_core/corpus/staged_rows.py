"""The last stage of the staged corpus job: a video's reports and encoded masks -> its rows.

The same rows as `process_video` gives on the single-actor path: `ok` with the tracklets
of `assemble_instances`, or `failed` with the error a stage reported (or the driver's,
when the video's workers died too often).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vis_core.corpus.chunks import failure_message
from vis_core.corpus.detector_stage import LONG, OK, DetectorReport
from vis_core.corpus.listing import CorpusVideo
from vis_core.corpus.process import ProcessOptions
from vis_core.corpus.stage_seconds import StageSeconds
from vis_core.inference.mask_chunks import EncodedMaskChunk, assemble_instances
from vis_core.tables.rows import VideoRows, failed_rows, ok_rows


def staged_rows(
    video: CorpusVideo,
    options: ProcessOptions,
    reports: Sequence[DetectorReport],
    chunks: Sequence[EncodedMaskChunk | None],
    class_names: Sequence[str],
    elapsed_s: float,
    failure: str | None = None,
) -> tuple[VideoRows, StageSeconds]:
    """The rows of `video` and its stage seconds so far.

    reports: the detector stage's, first pass first (a long video's second pass after);
    chunks: the encoded masks of every chunk in frame order (None where a chunk had none);
    elapsed_s: wall seconds since the video was started; failure: the error of a video the
    driver gave up on (its rows are then `failed` whatever the reports say).
    """
    record = options.record(video.video_id, video.uri)
    first = reports[0] if reports else None
    seconds = sum((report.seconds for report in reports), StageSeconds())
    encoded = [chunk for chunk in chunks if chunk is not None]
    seconds += StageSeconds(masks=sum(chunk.cpu_s for chunk in encoded))
    if first is not None and first.header is not None:
        header = first.header
        record = dataclasses.replace(
            record, fps=header.fps, width=header.width, height=header.height
        )
    failed = (r.error or r.status for r in reports if r.status not in (OK, LONG))
    error = failure or next(failed, None)
    if error is None and (first is None or first.selection is None or first.header is None):
        error = "no detector report for the video"
    if error is not None:
        return failed_rows(dataclasses.replace(record, total_s=elapsed_s), error), seconds
    assert first is not None and first.header is not None and first.selection is not None
    try:
        instances = assemble_instances(
            first.selection, encoded, first.header.geometry, first.num_frames
        )
    except Exception as exception:
        message = failure_message(exception)
        return failed_rows(dataclasses.replace(record, total_s=elapsed_s), message), seconds
    record = dataclasses.replace(
        record,
        num_frames=instances.num_frames,
        decode_s=sum(report.decode_s for report in reports),
        inference_s=sum(report.inference_s for report in reports),
        total_s=elapsed_s,
    )
    return ok_rows(record, instances, class_names, first.timestamps), seconds
