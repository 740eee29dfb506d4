"""Dataset category ids <-> model labels."""

import pytest

from vis_core.data.labels import NO_CATEGORY, category_of_label, label_of_category
from vis_core.data.ytvis import Category

CATEGORIES = (Category(7, "star"), Category(3, "circle"), Category(9, "kite"))


def test_by_name_when_the_model_names_its_classes():
    names = ("circle", "square", "star")
    assert label_of_category(CATEGORIES, names, 3) == {3: 0, 7: 2}  # kite is unknown
    assert category_of_label(CATEGORIES, names, 3) == [3, NO_CATEGORY, 7]


def test_by_sorted_id_without_names():
    assert label_of_category(CATEGORIES, (), 3) == {3: 0, 7: 1, 9: 2}
    with pytest.raises(ValueError, match="3 categories"):
        label_of_category(CATEGORIES, (), 40)


def test_no_shared_category_is_an_error():
    with pytest.raises(ValueError, match="no dataset category"):
        label_of_category(CATEGORIES, ("square",), 1)
