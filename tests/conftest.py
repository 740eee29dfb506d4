"""Shared test set-up: `gpu` tests skip where CUDA is absent; the per-user data folder
(MLflow store, caches) is a temporary one; the local S3 fixtures."""

import pytest
import torch

from tests.s3 import s3_bucket, s3_server  # noqa: F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _temporary_data_folder(tmp_path_factory: pytest.TempPathFactory):
    """Nothing a test runs writes to the user's data folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIS_HOME", str(tmp_path_factory.mktemp("vis_home")))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield
