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
        # The cache too (ONNX exports, downloads), shared by the tests of a session.
        patch.setenv("VIS_CACHE", str(tmp_path_factory.mktemp("vis_cache")))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module's tests (a runtime compared with eager gets the
    same), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model file of the small preset with random weights and 64-pixel inputs (fast on
    CPU); videos over 8 frames take the segmenter's two-pass (long video) path."""
    import dataclasses

    from vis_core.modeling.model_file import save_model
    from vis_core.modeling.presets import vita_small_synth
    from vis_core.modeling.vita_model import VitaModel

    config = vita_small_synth()
    config = dataclasses.replace(
        config,
        input=dataclasses.replace(config.input, min_size_test=64),
        inference=dataclasses.replace(config.inference, long_video_frames=8),
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.vis.pt"
    save_model(str(path), VitaModel(config), weights_dtype=torch.float16)
    return str(path)
