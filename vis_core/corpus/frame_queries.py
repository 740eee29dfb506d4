"""The `frame_queries` table: each frame's detector outputs, written and read back.

`vis process --frame-queries` records, for every frame of an `ok` video, what the temporal
heads read of the detector (`vis_core.tables.schema.FRAME_QUERIES_SCHEMA`):

- queries `[Q, C]`: the last decoder layer's decoder-normed queries (VITA, QueryTrack and
  HF read them);
- class_logits `[Q, K+1]`: their class logits (QueryTrack's candidates, VITA's token
  pruning, the per-frame baseline);
- mask_features `[C_m, h, w]`: the stride-4 pixel-decoder map of the padded input
  (`clip_mask_features`): VITA's masks (its own 1x1 conv), HF's pixels, and the frame
  decoder's mask logits again (`FrameDetector.mask_logits`: the pixel decoder's
  `mask_features` conv and the mask head over the queries), for QueryTrack and the
  per-frame baseline;

with the input geometry that takes masks back to the original frame size. Tensors are raw
little-endian bytes of `dtype` (float16 by default: half the bytes, VITA's outputs within
its rounding; float32 re-associates bit for bit on the CPU). The shipped model on a 240p
input (320x240: a 64x80 grid of 64 channels) stores about 0.66 MB a frame, almost all of
it the mask features.

`vis process --from-frame-queries` reads them back as a `DetectorSource` (`StoredFrames`):
the same segmenters' code then runs on them as on the live detector. Local2Global cannot:
it runs the frame decoder again on the pixel decoder's three multi-scale maps, which the
table does not hold (they are several times the stride-4 map).

Dimension letters: t frames of a chunk, Q frame queries, C channels, K classes, C_m the
stride-4 map's channels, h x w its grid (the padded input / 4).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from vis_core.inference.detector_source import DetectorChunk
from vis_core.inference.frames import FrameSourceError, InputGeometry
from vis_core.modeling.frame_detector import FrameDetector
from vis_core.tables.read import table_dataset
from vis_core.tables.schema import FRAME_QUERIES, SCHEMAS

FRAME_QUERY_DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "float32": torch.float32}
_NUMPY_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
_TENSORS = ("queries", "class_logits", "mask_features")
_GEOMETRY = (
    "height",
    "width",
    "resized_height",
    "resized_width",
    "padded_height",
    "padded_width",
)


class FrameQueriesError(ValueError):
    """Stored frame queries that this model cannot read (another detector, other shapes,
    frames missing)."""


def check_dtype(dtype: str) -> str:
    if dtype not in FRAME_QUERY_DTYPES:
        raise ValueError(f"frame queries dtype must be one of {sorted(FRAME_QUERY_DTYPES)}")
    return dtype


class FrameQueryRecorder:
    """Collects one video's detector outputs chunk by chunk (a `RecordingSource`'s
    callback), as `dtype` numpy arrays on the CPU, then makes its `frame_queries` rows."""

    def __init__(self, dtype: str = "float16"):
        self.dtype = check_dtype(dtype)
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in _TENSORS}
        self.geometry: InputGeometry | None = None

    def __call__(self, chunk: DetectorChunk, geometry: InputGeometry) -> None:
        torch_dtype = FRAME_QUERY_DTYPES[self.dtype]
        tensors = (chunk.frame_queries, chunk.class_logits, chunk.mask_features)
        for name, tensor in zip(_TENSORS, tensors, strict=True):
            self._parts[name].append(tensor.detach().to("cpu", torch_dtype).contiguous().numpy())
        self.geometry = geometry

    @property
    def num_frames(self) -> int:
        return sum(part.shape[0] for part in self._parts["queries"])

    def table(
        self, video_id: str, run_id: str, detector: str, timestamps: Sequence[float]
    ) -> pa.Table:
        """The video's rows, one per frame; timestamps `[T]` in seconds."""
        count = self.num_frames
        if len(timestamps) != count or self.geometry is None:
            raise ValueError(f"{len(timestamps)} timestamps for {count} recorded frames")
        columns: dict[str, Any] = {
            "video_id": pa.array([video_id] * count, pa.string()),
            "frame_index": pa.array(np.arange(count, dtype=np.int32)),
            "timestamp_s": pa.array(np.asarray(timestamps, dtype=np.float64)),
            "dtype": pa.array([self.dtype] * count, pa.string()),
        }
        shapes = {}
        for name in _TENSORS:
            values = np.concatenate(self._parts[name])  # [T, ...]
            shapes[name] = values.shape[1:]
            columns[name] = _binary_rows(values)
        sizes = {
            "num_queries": shapes["queries"][0],
            "query_dim": shapes["queries"][1],
            "num_logits": shapes["class_logits"][1],
            "mask_channels": shapes["mask_features"][0],
            "mask_height": shapes["mask_features"][1],
            "mask_width": shapes["mask_features"][2],
            **{name: getattr(self.geometry, name) for name in _GEOMETRY},
        }
        for name, value in sizes.items():
            columns[name] = pa.array(np.full(count, value, dtype=np.int32))
        columns["detector"] = pa.array([detector] * count, pa.string())
        columns["run_id"] = pa.array([run_id] * count, pa.string())
        schema = SCHEMAS[FRAME_QUERIES]
        return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


def _binary_rows(values: np.ndarray) -> pa.Array:
    """`[T, ...]` numpy -> large_binary `[T]`, row i the bytes of `values[i]` (no copy)."""
    count = values.shape[0]
    row_bytes = values[0].nbytes if count else 0
    offsets = np.arange(count + 1, dtype=np.int64) * row_bytes
    data = np.ascontiguousarray(values).view(np.uint8).reshape(-1)
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _tensor_rows(column: pa.ChunkedArray | pa.Array, dtype: str, shape: tuple[int, ...]) -> Tensor:
    """large_binary rows of `dtype` values -> float32 tensor `[t, *shape]`."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)
        parts.append(data[offsets[0] : offsets[-1]])
    raw = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
    values = raw.view(_NUMPY_DTYPES[dtype])
    expected = int(np.prod(shape))
    if values.size % max(expected, 1) or values.size // max(expected, 1) != len(column):
        raise FrameQueriesError(f"stored tensors are not {len(column)} x {list(shape)} {dtype}")
    return torch.from_numpy(values.astype(np.float32).reshape(-1, *shape))


@dataclass(frozen=True)
class StoredVideo:
    """An `ok` video of a run with frame queries, to re-associate: where its rows are.

    source_uri: the output prefix read; run_id: the run that wrote them; paths: table ->
    the file holding the video's rows (a pack's, shared with other videos, when packed);
    uri: where the frames' outputs are read from (the `frame_queries` file), for errors.
    """

    video_id: str
    source_uri: str
    run_id: str
    paths: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return self.paths.get(FRAME_QUERIES, self.source_uri)


@dataclass(frozen=True)
class StoredSummary:
    """What a video's rows say besides the tensors: its frames' timestamps `[T]`, its
    geometry, the dtype and the detector they were made with."""

    timestamps: np.ndarray
    geometry: InputGeometry
    dtype: str
    detector: str


class StoredFrames:
    """One video's `frame_queries` rows as a `DetectorSource` (see the module docstring).

    fs: the source's filesystem; path: the file with the video's rows; detector: the
    model's (it remakes the mask logits when `mask_logits`, else chunks carry an empty
    `[t, Q, 0, 0]`); tensors go to `device` as float32.
    """

    def __init__(
        self,
        fs: Any,
        path: str,
        video_id: str,
        detector: FrameDetector,
        device: torch.device,
        mask_logits: bool = True,
    ):
        self.fs = fs
        self.path = path
        self.video_id = video_id
        self.detector = detector
        self.device = device
        self.mask_logits = mask_logits
        self._summary: StoredSummary | None = None

    def summary(self) -> StoredSummary:
        """Read the small columns once; a `FrameQueriesError` when frames are missing."""
        if self._summary is None:
            columns = ["frame_index", "timestamp_s", "dtype", "detector", *_GEOMETRY]
            rows = pa.concat_tables(self._read(columns, 4096))
            if rows.num_rows == 0:
                raise FrameSourceError(f"no frame queries of {self.video_id!r} in {self.path}")
            index = rows["frame_index"].to_numpy()
            if not np.array_equal(index, np.arange(rows.num_rows)):
                raise FrameQueriesError(
                    f"the frame queries of {self.video_id!r} are not frames 0..{rows.num_rows - 1}"
                )
            first = rows.slice(0, 1).to_pylist()[0]
            self._summary = StoredSummary(
                timestamps=rows["timestamp_s"].to_numpy(),
                geometry=InputGeometry(**{name: first[name] for name in _GEOMETRY}),
                dtype=first["dtype"],
                detector=first["detector"],
            )
        return self._summary

    def chunks(self, chunk_frames: int) -> Iterator[tuple[DetectorChunk, InputGeometry]]:
        summary = self.summary()
        columns = ["frame_index", *_TENSORS, "num_queries", "query_dim", "num_logits"]
        columns += ["mask_channels", "mask_height", "mask_width"]
        first_frame = 0
        for rows in self._read(columns, chunk_frames):
            sizes = rows.slice(0, 1).to_pylist()[0]
            queries = self._tensor(rows, "queries", (sizes["num_queries"], sizes["query_dim"]))
            logits = self._tensor(rows, "class_logits", (sizes["num_queries"], sizes["num_logits"]))
            grid = (sizes["mask_channels"], sizes["mask_height"], sizes["mask_width"])
            features = self._tensor(rows, "mask_features", grid)
            if self.mask_logits:
                mask_logits = self.detector.mask_logits(queries, features)
            else:
                mask_logits = queries.new_zeros((*queries.shape[:2], 0, 0))
            chunk = DetectorChunk(
                first_frame=first_frame,
                class_logits=logits,
                mask_logits=mask_logits,
                frame_queries=queries,
                mask_features=features,
            )
            del rows, queries, logits, features, mask_logits
            first_frame += chunk.num_frames
            yield chunk, summary.geometry
            del chunk

    def clip_mask_features(self, chunk_frames: int, geometry: InputGeometry) -> Iterator[Tensor]:
        columns = ["mask_features", "mask_channels", "mask_height", "mask_width"]
        for rows in self._read(columns, chunk_frames):
            sizes = rows.slice(0, 1).to_pylist()[0]
            grid = (sizes["mask_channels"], sizes["mask_height"], sizes["mask_width"])
            yield self._tensor(rows, "mask_features", grid)

    def _tensor(self, rows: pa.Table, name: str, shape: tuple[int, ...]) -> Tensor:
        return _tensor_rows(rows[name], self.summary().dtype, shape).to(self.device)

    def _read(self, columns: list[str], chunk_frames: int) -> Iterator[pa.Table]:
        """The video's rows in file order, `chunk_frames` at a time, streamed by row group
        (a pack file holds other videos' rows too: filtered out)."""
        dataset = table_dataset(self.fs, [self.path], FRAME_QUERIES)
        batches = dataset.to_batches(
            columns=columns,
            filter=pc.field("video_id") == self.video_id,
            batch_readahead=1,
            fragment_readahead=1,
        )
        held: list[pa.RecordBatch] = []
        count = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            held.append(batch)
            count += batch.num_rows
            while count >= chunk_frames:
                rows = pa.Table.from_batches(held)
                yield rows.slice(0, chunk_frames)
                rest = rows.slice(chunk_frames)
                held, count = rest.to_batches(), rest.num_rows
        if count:
            yield pa.Table.from_batches(held)
