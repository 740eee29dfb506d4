"""MLflow tracking of trainings and jobs: the one module of the project that talks to MLflow.

Every call goes through an `MlflowClient` built from an explicit `TrackingConfig`, never
through MLflow's process-wide state, so nothing lands in the working directory: MLflow
3's defaults would put `mlflow.db` there, and artifacts in `./mlruns` unless an
experiment names its artifact location. The embedded default is a local SQLite store and
artifact folder in the per-user data folder (`vis_core.paths.data_dir()`); a tracking
server (`http://...`) can be given instead.

A training is one MLflow run, found again by the tag `vis.training_name`, so a resumed
training logs into the run it started. Model files are logged as plain artifacts and
registered as model versions (MLflow 3's `mlflow.register_model` only accepts logged
models, so the version is created from the artifact's URI with the client); versions are
marked with an alias, since registry stages are deprecated.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from vis_core.paths import cache_dir, data_dir

DEFAULT_EXPERIMENT = "vis-train"
TRAINING_NAME_TAG = "vis.training_name"
MODEL_ARTIFACT_PATH = "model"
MODEL_FILE_NAME = "model.vis.pt"
# "latest" is reserved by the registry (`models:/NAME/latest` is the newest version).
DEFAULT_ALIAS = "candidate"
# MLflow's per-request limits (mlflow.utils.validation).
_PARAMS_PER_CALL = 100
_METRICS_PER_CALL = 1000
_PARAM_VALUE_LENGTH = 6000
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


class TrackingError(RuntimeError):
    """A tracking store, run or registered model cannot be used as asked."""


@dataclass(frozen=True)
class TrackingConfig:
    """Where trainings are recorded.

    tracking_uri: an MLflow tracking URI (`sqlite:///...`, `http://host:5000`); None for
        `MLFLOW_TRACKING_URI` when set, else the local store
        `sqlite:///<data_dir>/mlflow/mlflow.db`.
    artifact_root: the artifact folder or URI of experiments created here; None for
        `<data_dir>/mlflow/artifacts` with the default store, the database's folder +
        `/artifacts` with another SQLite store, and the server's choice otherwise.
    """

    tracking_uri: str | None = None
    artifact_root: str | None = None
    experiment: str = DEFAULT_EXPERIMENT

    def resolved(self) -> TrackingConfig:
        """The same config with defaults filled in and local paths made absolute (Ray
        workers run in another working directory)."""
        if self.tracking_uri is None and os.environ.get("MLFLOW_TRACKING_URI"):
            return TrackingConfig(
                os.environ["MLFLOW_TRACKING_URI"], self.artifact_root, self.experiment
            ).resolved()
        if self.tracking_uri is None:
            root = data_dir() / "mlflow"
            root.mkdir(parents=True, exist_ok=True)
            tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        else:
            tracking_uri = _absolute_sqlite_uri(self.tracking_uri)
        artifact_root = self.artifact_root
        if artifact_root is None and tracking_uri.startswith("sqlite:///"):
            artifact_root = str(Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts")
        elif artifact_root is not None and "://" not in artifact_root:
            artifact_root = os.path.abspath(artifact_root)
        return TrackingConfig(tracking_uri, artifact_root, self.experiment)


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version: `models:/{name}/{version}` and `models:/{name}@{alias}`."""

    name: str
    version: str
    alias: str
    source: str


def client_for(config: TrackingConfig) -> MlflowClient:
    """A client of the resolved tracking store, whose registry is the same store."""
    uri = config.resolved().tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings and dataclasses -> `{"a.b.c": "value"}`, values stringified.

    Tuples and lists stay one value (`"(48, 64)"`), so a config reads back as written.
    """
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            text = str(value)
            if len(text) > _PARAM_VALUE_LENGTH:  # MLflow refuses longer values
                text = text[: _PARAM_VALUE_LENGTH - 3] + "..."
            flat[name] = text
    return flat


class TrainingRun:
    """The MLflow run of one training (see the module docstring)."""

    def __init__(self, config: TrackingConfig, run_id: str, resumed: bool = False):
        self.config = config.resolved()
        self.client = client_for(self.config)
        self.run_id = run_id
        self.resumed = resumed

    @classmethod
    def start_or_resume(
        cls, config: TrackingConfig, training_name: str, tags: Mapping[str, str] | None = None
    ) -> TrainingRun:
        """The run tagged with `training_name` in the experiment (marked running again), or
        a new one named after the training."""
        config = config.resolved()
        client = client_for(config)
        existing = find_run_id(config, training_name)
        if existing is not None:
            client.update_run(existing, status="RUNNING")
            return cls(config, existing, resumed=True)
        return cls.start(config, training_name, {TRAINING_NAME_TAG: training_name, **(tags or {})})

    @classmethod
    def start(
        cls, config: TrackingConfig, run_name: str, tags: Mapping[str, str] | None = None
    ) -> TrainingRun:
        """A new run in the config's experiment (not found again by name)."""
        config = config.resolved()
        client = client_for(config)
        run = client.create_run(_experiment_id(client, config), run_name=run_name, tags=tags)
        return cls(config, run.info.run_id)

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def log_params(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """Log `params` (flattened) in chunks; returns the keys whose value changed.

        MLflow refuses to change a logged param, so on a resumed run a changed value is
        kept as the tag `vis.changed.<key>` (the last value given) instead.
        """
        flat = flatten_params(params)
        logged = self.client.get_run(self.run_id).data.params
        new = [Param(key, value) for key, value in flat.items() if key not in logged]
        changed = tuple(key for key in flat if key in logged and logged[key] != flat[key])
        for start in range(0, len(new), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=new[start : start + _PARAMS_PER_CALL])
        tags = [RunTag(f"vis.changed.{key}", flat[key][:_PARAM_VALUE_LENGTH]) for key in changed]
        for start in range(0, len(tags), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, tags=tags[start : start + _PARAMS_PER_CALL])
        return changed

    def set_tags(self, tags: Mapping[str, str]) -> None:
        entries = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(entries), _PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, tags=entries[start : start + _PARAMS_PER_CALL])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        timestamp = int(time.time() * 1000)
        entries = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        for start in range(0, len(entries), _METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=entries[start : start + _METRICS_PER_CALL])

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's contents under `artifact_path`."""
        path = Path(local_path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_json(self, data: Any, artifact_file: str) -> None:
        """Write `data` as indented JSON to the artifact `artifact_file` (`dir/name.json`)."""
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            self.client.log_artifact(self.run_id, str(path), folder or None)

    def log_model_file(
        self, model_file: str | os.PathLike, artifact_path: str = MODEL_ARTIFACT_PATH
    ) -> str:
        """Log a vis model file as the artifact `{artifact_path}/model.vis.pt`; returns
        `artifact_path`, what `register_model` registers. A run that registers several
        models (a resumed training) needs one folder per model: a version's files must
        not be overwritten by the next."""
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / MODEL_FILE_NAME  # a fixed name, found again by the loader
            shutil.copyfile(model_file, staged)
            self.client.log_artifact(self.run_id, str(staged), artifact_path)
        return artifact_path

    def register_model(
        self,
        name: str,
        artifact_path: str = MODEL_ARTIFACT_PATH,
        alias: str = DEFAULT_ALIAS,
        tags: Mapping[str, str] | None = None,
    ) -> RegisteredVersion:
        """Register the model file logged at `artifact_path` (`log_model_file`) as a new
        version of `name`, and point `alias` at it."""
        logged = {entry.path for entry in self.client.list_artifacts(self.run_id, artifact_path)}
        if f"{artifact_path}/{MODEL_FILE_NAME}" not in logged:
            raise TrackingError(
                f"run {self.run_id} has no model file at {artifact_path}: call log_model_file"
            )
        source = f"{self.artifact_uri.rstrip('/')}/{artifact_path}"
        try:
            self.client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(
            name,
            source=source,
            run_id=self.run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
        )
        self.client.set_registered_model_alias(name, alias, version.version)
        return RegisteredVersion(name, str(version.version), alias, source)

    def finish(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def register_model_file(
    config: TrackingConfig,
    model_file: str | os.PathLike,
    name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    alias: str = DEFAULT_ALIAS,
) -> RegisteredVersion:
    """Record a model file trained elsewhere (the shipped one, a device sitting's) as a run
    of its own, with `params` and `metrics`, and register it as a new version of `name`."""
    run = TrainingRun.start(config, run_name=f"register {name}", tags={"vis.registered": name})
    try:
        run.log_params(params)
        run.log_metrics(metrics, step=0)
        run.log_model_file(model_file)
        version = run.register_model(name, alias=alias)
    except BaseException:
        run.finish(failed=True)
        raise
    run.finish()
    return version


def find_run_id(config: TrackingConfig, training_name: str) -> str | None:
    """The id of the run of `training_name` in the config's experiment, if there is one."""
    config = config.resolved()
    client = client_for(config)
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        return None
    quoted = training_name.replace("'", "\\'")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TRAINING_NAME_TAG}` = '{quoted}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def resolve_model_uri(
    uri: str, tracking_uri: str | None = None, download_dir: str | os.PathLike | None = None
) -> Path:
    """`models:/NAME/VERSION`, `models:/NAME@ALIAS` or `models:/NAME/latest` -> the local
    path of its vis model file. Any other URI is returned as a path unchanged.

    Artifacts in a local store are used in place; remote ones are downloaded to
    `download_dir` (default `<cache_dir>/models/NAME/VERSION`).
    """
    if not uri.startswith("models:/"):
        return Path(uri)
    match = _MODEL_URI.match(uri)
    if match is None:
        raise TrackingError(f"{uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS")
    client = client_for(TrackingConfig(tracking_uri=tracking_uri))
    name = match["name"]
    try:
        if match["alias"]:
            version = client.get_model_version_by_alias(name, match["alias"])
        elif match["version"] == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise TrackingError(f"registered model {name!r} has no versions")
            version = max(versions, key=lambda v: int(v.version))
        else:
            version = client.get_model_version(name, match["version"])
    except MlflowException as error:
        raise TrackingError(f"cannot resolve {uri}: {error.message}") from None
    target = download_dir or cache_dir() / "models" / name / str(version.version)
    local = download_artifacts(
        artifact_uri=version.source,
        tracking_uri=client.tracking_uri,
        dst_path=None if _is_local(version.source) else str(target),
    )
    path = Path(local)
    if path.is_dir():
        path = path / MODEL_FILE_NAME
    if not path.is_file():
        raise TrackingError(f"{uri} (source {version.source}) holds no {MODEL_FILE_NAME}")
    return path


def _experiment_id(client: MlflowClient, config: TrackingConfig) -> str:
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if config.artifact_root is not None:
        location = f"{config.artifact_root.rstrip('/')}/{_safe_name(config.experiment)}"
    try:
        return client.create_experiment(config.experiment, artifact_location=location)
    except MlflowException as error:  # created meanwhile by another process
        experiment = client.get_experiment_by_name(config.experiment)
        if experiment is None:
            message = f"cannot create experiment {config.experiment!r}: {error.message}"
            raise TrackingError(message) from None
        return experiment.experiment_id


def _absolute_sqlite_uri(uri: str) -> str:
    """`sqlite:///relative.db` -> `sqlite:////abs/relative.db`; other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + os.path.abspath(uri.removeprefix(prefix))
    return uri


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "experiment"


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def record_job(
    config: TrackingConfig,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
) -> str:
    """Record a finished batch job (a corpus job) as one MLflow run; returns its id."""
    config = config.resolved()
    client = client_for(config)
    run = client.create_run(_experiment_id(client, config), run_name=run_name, tags=tags)
    recorded = TrainingRun(config, run.info.run_id)
    recorded.log_params(params)
    recorded.log_metrics(metrics, step=0)
    recorded.finish()
    return run.info.run_id


# Reading runs back (notebooks, reports)

_RUNS_PER_PAGE = 1000


def list_runs(config: TrackingConfig) -> list[dict[str, Any]]:
    """The runs of the config's experiment, newest first, one flat dict each.

    Keys: `run_id`, `name`, `status`, `start_time` (UTC datetime), `end_time` (None while
    running), then `params.<key>` (strings, as logged) and `metrics.<key>` (each metric's
    last logged value), the columns of `mlflow.search_runs`. An experiment that does not
    exist has no runs.
    """
    client = client_for(config)
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        return []
    found, token = [], None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            order_by=["attributes.start_time DESC"],
            max_results=_RUNS_PER_PAGE,
            page_token=token,
        )
        found.extend(page)
        token = page.token
        if not token:
            break
    rows = []
    for run in found:
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "name": run.info.run_name,
            "status": run.info.status,
            "start_time": _utc(run.info.start_time),
            "end_time": _utc(run.info.end_time),
        }
        row.update({f"params.{key}": value for key, value in sorted(run.data.params.items())})
        row.update({f"metrics.{key}": value for key, value in sorted(run.data.metrics.items())})
        rows.append(row)
    return rows


def run_history(
    config: TrackingConfig, run_id: str, keys: Sequence[str]
) -> dict[str, list[tuple[int, float]]]:
    """Every logged value of each metric in `keys` for one run: `(step, value)` pairs by
    step (the last logged value where a step was logged twice, as by a resumed training).
    A metric the run never logged has an empty list."""
    client = client_for(config)
    history: dict[str, list[tuple[int, float]]] = {}
    for key in keys:
        by_step: dict[int, tuple[int, float]] = {}  # step -> (timestamp, value)
        for metric in client.get_metric_history(run_id, key):
            seen = by_step.get(metric.step)
            if seen is None or metric.timestamp >= seen[0]:
                by_step[metric.step] = (metric.timestamp, metric.value)
        history[key] = [(step, by_step[step][1]) for step in sorted(by_step)]
    return history


def _utc(millis: int | None) -> datetime.datetime | None:
    if millis is None:
        return None
    return datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC)
