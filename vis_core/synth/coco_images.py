"""A COCO-format still-image set for pseudo-video training.

Each image is a one-frame scene drawn from the split's config (its own random stream, see
`generate.py`), written as `coco/images/NAME.jpg`; `coco/annotations.json` holds
`images` (`id`, `file_name` relative to `coco/images/`, `width`, `height`),
`annotations` (`id`, `image_id`, `category_id`, `segmentation` as compressed RLE with str
counts, `area`, `bbox` [x, y, w, h], `iscrowd` 0) for every visible instance, and
`categories`. JPEGs are encoded with PyAV's MJPEG encoder (no extra imaging library).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vis_core import masks
from vis_core.storage import join, open_fs
from vis_core.synth.annotations import category_records
from vis_core.synth.generate import image_scene
from vis_core.synth.render import render_video
from vis_core.synth.splits import SynthConfig
from vis_core.video.image import encode_jpeg


@dataclass(frozen=True)
class CocoInstance:
    category_id: int
    segmentation: masks.RLE
    area: int
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class CocoImage:
    """One written image: `file_name` inside `coco/images/` and its visible instances."""

    index: int
    file_name: str
    width: int
    height: int
    instances: tuple[CocoInstance, ...]


def image_name(config: SynthConfig, index: int) -> str:
    return f"{config.name}_{index:06d}.jpg"


def write_image(out_uri: str, config: SynthConfig, seed: int, index: int) -> CocoImage:
    """Render still image `index`, write its JPEG under `out_uri/coco/images/`, return its
    annotations."""
    scene = image_scene(config, seed, index)
    rendered = render_video(scene)
    labels = rendered.labels[0]
    instances = []
    for instance, obj in enumerate(scene.objects, start=1):
        mask = labels == instance
        area = int(np.count_nonzero(mask))
        if area == 0:
            continue
        rle = masks.encode_one(mask)
        x, y, w, h = (float(value) for value in masks.bbox([rle])[0])
        instances.append(CocoInstance(obj.category.id, rle, area, (x, y, w, h)))
    name = image_name(config, index)
    fs, root = open_fs(out_uri)
    images_dir = join(root, "coco", "images")
    fs.makedirs(images_dir, exist_ok=True)
    with fs.open(join(images_dir, name), "wb") as file:
        file.write(encode_jpeg(rendered.frames[0]))
    return CocoImage(index, name, scene.width, scene.height, tuple(instances))


def coco_annotation_file(images: list[CocoImage], info: dict[str, Any]) -> dict[str, Any]:
    """The COCO json of written images (image ids `index + 1`, annotation ids from 1)."""
    annotations = []
    for image in images:
        for instance in image.instances:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image.index + 1,
                    "category_id": instance.category_id,
                    "segmentation": instance.segmentation,
                    "area": instance.area,
                    "bbox": list(instance.bbox),
                    "iscrowd": 0,
                }
            )
    return {
        "info": info,
        "images": [
            {
                "id": image.index + 1,
                "file_name": image.file_name,
                "width": image.width,
                "height": image.height,
            }
            for image in images
        ],
        "annotations": annotations,
        "categories": category_records(),
    }
