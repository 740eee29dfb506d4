"""COCO-format image sets (instance masks), the source of pseudo-video training clips.

Files: `images` (`id`, `file_name`, `height`, `width`), `annotations` (`image_id`,
`category_id`, `segmentation` as polygons or RLE, `iscrowd`), `categories`. Images are
read from `<folder of the annotation file>/images/<file_name>` unless `images_root` says.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vis_core import masks
from vis_core.data.ytvis import AnnotationFormatError, Category
from vis_core.storage import join, open_fs
from vis_core.video.image import decode_image


@dataclass(frozen=True)
class CocoImageEntry:
    id: int
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class CocoInstance:
    category_id: int
    segmentation: Any = field(repr=False)
    iscrowd: bool = False


@dataclass(frozen=True)
class CocoDataset:
    images_root: str
    images: tuple[CocoImageEntry, ...]
    categories: tuple[Category, ...]
    instances_by_image: Mapping[int, tuple[CocoInstance, ...]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def load(cls, uri: str, images_root: str | None = None) -> CocoDataset:
        fs, path = open_fs(uri)
        if not fs.exists(path):
            raise FileNotFoundError(f"COCO annotation file not found: {uri}")
        with fs.open(path, "rb") as file:
            data = json.load(file)
        root = uri.rstrip("/").rsplit("/", 1)[0] if "/" in uri else "."
        try:
            images = tuple(
                CocoImageEntry(int(i["id"]), str(i["file_name"]), int(i["height"]), int(i["width"]))
                for i in data["images"]
            )
            categories = tuple(Category(int(c["id"]), str(c["name"])) for c in data["categories"])
            instances: dict[int, list[CocoInstance]] = defaultdict(list)
            for annotation in data.get("annotations") or ():
                instances[int(annotation["image_id"])].append(
                    CocoInstance(
                        category_id=int(annotation["category_id"]),
                        segmentation=annotation["segmentation"],
                        iscrowd=bool(annotation.get("iscrowd", 0)),
                    )
                )
        except (KeyError, TypeError, ValueError) as error:
            raise AnnotationFormatError(f"{uri}: not a COCO instance file ({error!r})") from None
        return cls(
            images_root=images_root or join(root, "images"),
            images=images,
            categories=categories,
            instances_by_image={key: tuple(value) for key, value in instances.items()},
        )

    def read_image(self, image: CocoImageEntry) -> np.ndarray:
        """The image `[H, W, 3]` uint8 RGB."""
        fs, root = open_fs(self.images_root)
        path = join(root, image.file_name)
        return decode_image(fs.cat_file(path), path)

    def instance_masks(self, image: CocoImageEntry) -> tuple[np.ndarray, list[CocoInstance]]:
        """Masks `[N, H, W]` bool of the image's non-crowd instances, and the instances."""
        kept = [i for i in self.instances_by_image.get(image.id, ()) if not i.iscrowd]
        if not kept:
            return np.zeros((0, image.height, image.width), bool), []
        rles = [masks.to_compressed(i.segmentation, image.height, image.width) for i in kept]
        return masks.decode(rles), kept
