"""The cluster and job specs under infra/ are valid as their tools read them: every YAML
parses and is checked by kind (Ray cluster launcher config against Ray's JSON schema,
KubeRay's documented required fields, job specs), every entrypoint runs a module of the
project with arguments its parser accepts, and the image pins its base and dependencies."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.submit import fill_entrypoint, load_spec

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))
DOCKERFILE = INFRA / "docker" / "Dockerfile"
CONSTRAINTS = INFRA / "docker" / "constraints.txt"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kind_of(path: Path, doc: dict) -> str:
    if str(doc.get("apiVersion", "")).startswith("ray.io/"):
        return str(doc.get("kind"))
    if "provider" in doc and "cluster_name" in doc:
        return "launcher"
    if path.parent == INFRA / "jobs" and "entrypoint" in doc:
        return "job-spec"
    return "unknown"


def all_documents() -> list[tuple[Path, str, dict]]:
    return [(p, kind_of(p, d), d) for p in YAML_FILES for d in documents(p)]


def project_image() -> str:
    """The image every spec runs: the launcher config's."""
    launcher = [d for _, kind, d in all_documents() if kind == "launcher"]
    return launcher[0]["docker"]["image"]


# -- every YAML ---------------------------------------------------------------------------


def test_infra_has_the_expected_specs() -> None:
    names = {str(p.relative_to(INFRA)) for p in YAML_FILES}
    assert {
        "cluster/aws.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob-process.yaml",
        "kuberay/rayjob-train.yaml",
        "jobs/process.yaml",
        "jobs/train.yaml",
        "jobs/eval.yaml",
    } <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_parses_into_checked_documents(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        kind = kind_of(path, doc)
        # A new kind of file needs its own checks below before it is accepted here.
        assert kind in {"launcher", "RayCluster", "RayJob", "job-spec"}, (path, kind)


# -- Ray cluster launcher -----------------------------------------------------------------


def launcher_configs() -> list[tuple[Path, dict]]:
    return [(p, d) for p, kind, d in all_documents() if kind == "launcher"]


def test_launcher_config_validates_against_rays_schema() -> None:
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    configs = launcher_configs()
    assert configs
    for path, config in configs:
        jsonschema.validate(config, schema)
        # Ray's own check of the config with its defaults filled in (what `ray up` does).
        from ray.autoscaler._private.util import prepare_config, validate_config

        validate_config(prepare_config(config))
        node_types = config["available_node_types"]
        head = node_types[config["head_node_type"]]
        assert head["resources"].get("CPU") == 0, f"{path}: the head should only schedule"
        workers = {n: t for n, t in node_types.items() if n != config["head_node_type"]}
        gpu = [t for t in workers.values() if t["node_config"]["InstanceType"].startswith("g")]
        cpu = [t for t in workers.values() if t not in gpu]
        assert gpu and cpu, f"{path}: needs a GPU and a CPU worker group"
        for node_type in workers.values():
            assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
        assert config["idle_timeout_minutes"] > 0
        assert ":" in config["docker"]["image"] and not config["docker"]["image"].endswith(
            ":latest"
        )


# -- KubeRay ------------------------------------------------------------------------------


def check_pod_template(where: str, template: dict, image: str) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: template.spec.containers is empty"
    for container in containers:
        assert container.get("name") and container.get("image"), where
        assert container["image"] == image, f"{where}: runs {container['image']}, not {image}"
        assert "resources" in container, f"{where}: no resources"
    return containers


def check_raycluster_spec(where: str, spec: dict, image: str) -> None:
    """KubeRay's required fields (ray-operator/apis/ray/v1/raycluster_types.go: the json tags
    without omitempty) and its validation rules (ray-operator/controllers/ray/utils)."""
    import ray

    assert spec.get("rayVersion") == ray.__version__, f"{where}: rayVersion"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), f"{where}: headGroupSpec.rayStartParams"
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), where
    check_pod_template(f"{where} head", head["template"], image)
    groups = spec.get("workerGroupSpecs") or []
    names = [group["groupName"] for group in groups]
    assert len(set(names)) == len(names), f"{where}: worker group names must be unique"
    for group in groups:
        name = f"{where} group {group['groupName']}"
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams"):
            assert key in group, f"{name}: missing {key}"
        assert isinstance(group["rayStartParams"], dict), name
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), name
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        containers = check_pod_template(name, group["template"], image)
        if "gpu" in group["groupName"]:
            limits = containers[0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1, f"{name}: no GPU limit"


def kuberay_documents(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p, k, d in all_documents() if k == kind]


def check_metadata(path: Path, doc: dict) -> None:
    assert doc["apiVersion"] == "ray.io/v1", path
    assert DNS_LABEL.match(doc["metadata"]["name"]), f"{path}: metadata.name"


def test_rayclusters_have_kuberays_required_fields() -> None:
    clusters = kuberay_documents("RayCluster")
    assert clusters
    for path, doc in clusters:
        check_metadata(path, doc)
        check_raycluster_spec(str(path), doc["spec"], project_image())
        groups = {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}
        assert {"gpu", "cpu"} <= set(groups), f"{path}: needs gpu and cpu worker groups"


def test_rayjobs_have_kuberays_required_fields() -> None:
    jobs = kuberay_documents("RayJob")
    assert {doc["metadata"]["name"] for _, doc in jobs} >= {"vis-process", "vis-train"}
    for path, doc in jobs:
        check_metadata(path, doc)
        spec = doc["spec"]
        assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip()
        # "one of RayClusterSpec or ClusterSelector must be set" (ValidateRayJobSpec).
        selector = spec.get("clusterSelector") or {}
        assert ("rayClusterSpec" in spec) != bool(selector), f"{path}: cluster spec or selector"
        if selector:
            assert selector.get("ray.io/cluster"), f"{path}: clusterSelector names no cluster"
            assert not spec.get("shutdownAfterJobFinishes"), f"{path}: cannot delete a selected one"
        else:
            check_raycluster_spec(str(path), spec["rayClusterSpec"], project_image())
        assert isinstance(spec.get("shutdownAfterJobFinishes"), bool), path
        assert isinstance(spec.get("ttlSecondsAfterFinished"), int), path
        assert spec["ttlSecondsAfterFinished"] >= 0
        assert not spec.get("suspend") or spec["shutdownAfterJobFinishes"], path
        if "activeDeadlineSeconds" in spec:
            assert spec["activeDeadlineSeconds"] > 0
        if "runtimeEnvYAML" in spec:
            runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
            assert isinstance(runtime_env, dict), f"{path}: runtimeEnvYAML is not a mapping"
            assert not any(SECRET_NAME.search(k) for k in runtime_env.get("env_vars", {}))


# -- job specs for `ray job submit` -------------------------------------------------------


def job_specs() -> list[Path]:
    return [p for p, kind, _ in all_documents() if kind == "job-spec"]


def dummy_values(path: Path) -> dict[str, str]:
    spec = load_spec(path)
    return {
        name: default if default is not None else f"s3://bucket/{name}/"
        for name, default in spec.params.items()
    }


@pytest.mark.parametrize("path", job_specs(), ids=lambda p: p.name)
def test_job_spec_is_submittable(path: Path) -> None:
    spec = load_spec(path)  # entrypoint a string, params == its placeholders, env_vars strings
    runtime_env = spec.runtime_env
    assert "working_dir" in runtime_env or "py_modules" in runtime_env, path
    if runtime_env.get("working_dir") == ".":
        assert ".venv" in runtime_env.get("excludes", []), f"{path}: would upload .venv"
    assert not any(SECRET_NAME.search(name) for name in runtime_env.get("env_vars", {})), path
    filled = fill_entrypoint(spec, dummy_values(path))
    assert "{" not in filled and "}" not in filled


# -- entrypoints: a module of the project, arguments its parser accepts -------------------


def entrypoints() -> list[tuple[str, str]]:
    found = [(f"{p.name}", fill_entrypoint(load_spec(p), dummy_values(p))) for p in job_specs()]
    found += [(p.name, d["spec"]["entrypoint"]) for p, d in kuberay_documents("RayJob")]
    return found


def module_parser(module_name: str) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser `python -m module_name` uses, and the words to put before the arguments:
    the `vis` parser for jobs.cli; for a subcommand module, the parser its `register`
    adds (which jobs.X's `__main__` runs through jobs.cli.main or its own `main`)."""
    if module_name == "jobs.cli":
        from jobs.cli import build_parser

        return build_parser(), []
    module = importlib.import_module(module_name)
    assert hasattr(module, "register"), f"{module_name}: no parser to check its arguments with"
    parser = argparse.ArgumentParser(prog=module_name)
    subparsers = parser.add_subparsers(dest="command", required=True)
    module.register(subparsers)
    (command,) = subparsers.choices
    return parser, [command]


@pytest.mark.parametrize("where, entrypoint", entrypoints(), ids=lambda v: str(v)[:40])
def test_entrypoint_runs_a_project_module_with_valid_arguments(where: str, entrypoint: str) -> None:
    words = shlex.split(entrypoint)
    assert words[:2] == ["python", "-m"], f"{where}: entrypoint is not `python -m MODULE ...`"
    module_name, args = words[2], words[3:]
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin, f"{where}: no module {module_name}"
    source = Path(spec.origin).read_text()
    assert re.search(r"""if __name__ == ["']__main__["']""", source), (
        f"{where}: `python -m {module_name}` would do nothing (no __main__ block)"
    )
    parser, prefix = module_parser(module_name)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args([*prefix, *args])
    except SystemExit:
        pytest.fail(f"{where}: {module_name} rejects {args}: {stderr.getvalue()}")


# -- the image ----------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments and
    blank lines dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, rest = whole.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends with a continuation"
    return instructions


KNOWN_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def base_image() -> str:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    (image,) = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    return image


def test_dockerfile_parses_and_pins_its_base_image_by_tag() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    assert {keyword for keyword, _ in instructions} <= KNOWN_INSTRUCTIONS
    assert instructions[0][0] == "FROM"
    image = base_image()
    assert "$" not in image, "the base image must be written out, not a build argument"
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag and tag and tag != "latest", image
    assert "cuda" in tag, f"{image}: not a CUDA build"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    # Every copied path exists and is let through by the image's ignore file.
    ignore = (INFRA / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, args in instructions:
        if keyword == "COPY" and not args.startswith("--from"):
            sources = [word for word in args.split()[:-1] if not word.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                assert source.rstrip("/") in allowed, f"COPY {source}: excluded from the context"


def test_image_dependencies_are_pinned_within_pyprojects_ranges() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pins: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line}: not an exact pin"
            assert not requirement.extras, f"{line}: constraints cannot carry extras"
            pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {dependency}"
    # torch is the base image's build, so pip does not replace it.
    tag = base_image().rpartition(":")[2]
    assert tag.startswith(f"{pins['torch']}-"), f"torch=={pins['torch']} vs base {tag}"
    # Clients and the cluster must run the same Ray.
    import ray

    assert str(pins["ray"]) == ray.__version__
