"""Dataset category ids <-> the model's contiguous class labels 0..K-1."""

from __future__ import annotations

from collections.abc import Sequence

from vis_core.data.ytvis import Category

NO_CATEGORY = -1


def label_of_category(
    categories: Sequence[Category], class_names: Sequence[str], num_classes: int
) -> dict[int, int]:
    """Dataset category id -> model label, for the categories the model knows.

    By class name when the model has names; otherwise categories sorted by id take labels
    0..K-1 (the YouTube-VIS convention), which needs exactly K categories.
    """
    if class_names:
        index = {name: label for label, name in enumerate(class_names)}
        mapping = {c.id: index[c.name] for c in categories if c.name in index}
    elif len(categories) == num_classes:
        mapping = {c.id: label for label, c in enumerate(sorted(categories, key=lambda c: c.id))}
    else:
        raise ValueError(
            f"the model has {num_classes} unnamed classes, the dataset {len(categories)} "
            "categories: cannot map them"
        )
    if not mapping:
        raise ValueError("no dataset category is a class of the model")
    return mapping


def category_of_label(
    categories: Sequence[Category], class_names: Sequence[str], num_classes: int
) -> list[int]:
    """`[K]` dataset category id of each model label (NO_CATEGORY where there is none)."""
    by_label = [NO_CATEGORY] * num_classes
    for category_id, label in label_of_category(categories, class_names, num_classes).items():
        by_label[label] = category_id
    return by_label
