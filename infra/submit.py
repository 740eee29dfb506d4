"""Submit a job spec (`infra/jobs/*.yaml`) to a Ray cluster, stream its logs, wait for it.

    python -m infra.submit infra/jobs/process.yaml --address http://127.0.0.1:8265 \\
        --set input=s3://bucket/videos/ --set output=s3://bucket/tables/ \\
        --set tracking_uri=http://mlflow:5000 [-- EXTRA ARGS ...]

A spec is a YAML mapping:

    entrypoint: python -m jobs.process --input {input} --output {output}
    params:               # every {placeholder} of the entrypoint, with its default
      input: null         # null: required, given with --set input=...
    runtime_env:          # Ray's runtime environment, as `ray job submit` takes it
      working_dir: .      # relative paths are relative to the repository root
      excludes: [...]
      env_vars: {...}     # never secrets: they show in the dashboard
    entrypoint_num_cpus: 1     # optional: also entrypoint_num_gpus, entrypoint_memory,
    metadata: {...}            # entrypoint_resources, description

Each `{name}` is replaced by the value of `--set name=VALUE` (or the param's default) as
one shell word (quoted where needed); `{{` and `}}` are literal braces. Arguments after
`--` are appended to the entrypoint, quoted the same way (e.g. `-- --gpu --workers 4`).
`--env NAME[=VALUE]` adds an environment variable to the job (from this environment
when no value is given). `--no-working-dir` runs the code installed in the cluster's image
instead of uploading this checkout.

Exit status: 0 when the job succeeded; the entrypoint's own exit status when it failed
with one (`jobs.process` exits 2 when it cannot run), else 1; 3 when the job was stopped;
2 when it cannot be submitted (a bad spec or arguments, no cluster at the address); 130
when interrupted (the job is stopped too). With
`--no-wait`, 0 once the job is submitted (its id is printed).

Connecting to a cluster with token authentication needs `RAY_AUTH_MODE=token` and the
token (`~/.ray/auth_token`, `RAY_AUTH_TOKEN` or `RAY_AUTH_TOKEN_PATH`), as for `ray job`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import string
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC_KEYS = {
    "entrypoint",
    "params",
    "runtime_env",
    "metadata",
    "description",
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_memory",
    "entrypoint_resources",
}
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_INTERRUPTED = 130
TERMINAL_STATUSES = ("SUCCEEDED", "FAILED", "STOPPED")


class SpecError(ValueError):
    """A job spec that cannot be submitted as written, or values that do not fit it."""


class SubmitError(RuntimeError):
    """The cluster could not be reached, or refused the job."""


@dataclass(frozen=True)
class JobSpec:
    entrypoint: str
    params: dict[str, str | None] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    description: str = ""
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None
    path: str = ""

    @property
    def placeholders(self) -> list[str]:
        return placeholders(self.entrypoint)

    def required(self) -> list[str]:
        return [name for name in self.placeholders if self.params.get(name) is None]


def placeholders(entrypoint: str) -> list[str]:
    """The `{name}` fields of an entrypoint, in order, each once."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(entrypoint))
    except ValueError as error:
        raise SpecError(f"entrypoint {entrypoint!r}: {error}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise SpecError(f"entrypoint placeholder {{{name}}} must be a plain {{identifier}}")
        if name not in names:
            names.append(name)
    return names


def load_spec(path: str | os.PathLike) -> JobSpec:
    """Read and check a job spec (see the module docstring)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SpecError(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a job spec is a mapping")
    unknown = set(data) - SPEC_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(SPEC_KEYS)})")
    entrypoint = data.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise SpecError(f"{path}: `entrypoint` must be a non-empty string")
    params = data.get("params") or {}
    runtime_env = data.get("runtime_env") or {}
    metadata = data.get("metadata") or {}
    if not isinstance(params, dict) or not isinstance(runtime_env, dict):
        raise SpecError(f"{path}: `params` and `runtime_env` must be mappings")
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SpecError(f"{path}: `metadata` must map names to strings")
    spec = JobSpec(
        entrypoint=entrypoint.strip(),
        params={str(k): None if v is None else str(v) for k, v in params.items()},
        runtime_env=runtime_env,
        metadata={str(k): v for k, v in metadata.items()},
        description=str(data.get("description") or ""),
        entrypoint_num_cpus=data.get("entrypoint_num_cpus"),
        entrypoint_num_gpus=data.get("entrypoint_num_gpus"),
        entrypoint_memory=data.get("entrypoint_memory"),
        entrypoint_resources=data.get("entrypoint_resources"),
        path=str(path),
    )
    names = spec.placeholders
    undeclared = [name for name in names if name not in spec.params]
    unused = [name for name in spec.params if name not in names]
    if undeclared or unused:
        raise SpecError(
            f"{path}: `params` must list exactly the entrypoint's placeholders "
            f"(undeclared: {undeclared}, unused: {unused})"
        )
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(isinstance(v, str) for v in env_vars.values()):
        raise SpecError(f"{path}: `runtime_env.env_vars` must map names to strings")
    return spec


def parse_assignments(items: Sequence[str], what: str = "--set") -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SpecError(f"{what} takes NAME=VALUE, got {item!r}")
        values[name] = value
    return values


def fill_entrypoint(
    spec: JobSpec, values: Mapping[str, str], extra_args: Sequence[str] = ()
) -> str:
    """The entrypoint with each placeholder replaced by its value as one shell word, and
    `extra_args` appended."""
    unknown = [name for name in values if name not in spec.params]
    if unknown:
        raise SpecError(f"{spec.path}: no placeholder {unknown}; it has {spec.placeholders}")
    merged = {name: values.get(name, default) for name, default in spec.params.items()}
    missing = [name for name, value in merged.items() if value is None]
    if missing:
        raise SpecError(
            f"{spec.path}: missing values for {missing}: pass "
            + " ".join(f"--set {name}=..." for name in missing)
        )
    quoted = {name: shlex.quote(value) for name, value in merged.items() if value is not None}
    command = spec.entrypoint.format_map(quoted)
    if extra_args:
        command = f"{command} {shlex.join(extra_args)}"
    return command


def build_runtime_env(
    spec: JobSpec,
    env: Mapping[str, str] | None = None,
    upload: bool = True,
    root: Path = REPO_ROOT,
) -> dict[str, Any]:
    """The spec's runtime_env with local paths made absolute (relative ones are relative
    to the repository root), `env` added to env_vars, and no working_dir when not
    `upload`."""
    runtime_env = {k: v for k, v in spec.runtime_env.items()}
    if not upload:
        runtime_env.pop("working_dir", None)
        runtime_env.pop("excludes", None)
    elif isinstance(runtime_env.get("working_dir"), str):
        runtime_env["working_dir"] = _local_path(runtime_env["working_dir"], root)
    if isinstance(runtime_env.get("py_modules"), list):
        runtime_env["py_modules"] = [
            _local_path(m, root) if isinstance(m, str) else m for m in runtime_env["py_modules"]
        ]
    if env:
        runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env}
    return runtime_env


def _local_path(value: str, root: Path) -> str:
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (root / path).resolve())


def env_from_options(items: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not name:
            raise SpecError(f"--env takes NAME or NAME=VALUE, got {item!r}")
        if not sep:
            if name not in environ:
                raise SpecError(f"--env {name}: not set in this environment")
            value = environ[name]
        env[name] = value
    return env


def exit_code(status: str, driver_exit_code: int | None) -> int:
    """The exit status of `infra.submit` for a finished job (see the module docstring)."""
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return EXIT_STOPPED
    if driver_exit_code:
        return int(driver_exit_code) if 0 < int(driver_exit_code) < 256 else EXIT_FAILED
    return EXIT_FAILED


def submit(
    spec: JobSpec,
    address: str,
    values: Mapping[str, str],
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    upload: bool = True,
    wait: bool = True,
    submission_id: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Submit the job, then (with `wait`) stream its logs to `out` until it ends; returns
    the exit status described in the module docstring."""
    out = out or sys.stdout
    err = err or sys.stderr
    from ray.job_submission import JobSubmissionClient

    entrypoint = fill_entrypoint(spec, values, extra_args)
    runtime_env = build_runtime_env(spec, env, upload)
    options: dict[str, Any] = {
        name: getattr(spec, name)
        for name in (
            "entrypoint_num_cpus",
            "entrypoint_num_gpus",
            "entrypoint_memory",
            "entrypoint_resources",
        )
        if getattr(spec, name) is not None
    }
    metadata = {**spec.metadata, "vis.spec": Path(spec.path).name}
    try:
        client = JobSubmissionClient(address)
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            metadata=metadata,
            submission_id=submission_id,
            **options,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        message = " ".join(str(error).split())[:2000]
        raise SubmitError(f"cannot submit to {address}: {message}") from error
    print(f"infra.submit: submitted {job_id} to {address}: {entrypoint}", file=err, flush=True)
    if not wait:
        print(job_id, file=out, flush=True)
        return 0
    try:
        asyncio.run(_stream_logs(client, job_id, out))
        status = _wait_terminal(client, job_id)
    except KeyboardInterrupt:
        print(f"infra.submit: interrupted; stopping {job_id}", file=err, flush=True)
        client.stop_job(job_id)
        return EXIT_INTERRUPTED
    info = client.get_job_info(job_id)
    code = exit_code(status, getattr(info, "driver_exit_code", None))
    first_line = (info.message or "").strip().splitlines()[:1]  # the rest repeats the logs
    message = f": {first_line[0]}" if status != "SUCCEEDED" and first_line else ""
    print(f"infra.submit: job {job_id} {status}{message}", file=err, flush=True)
    return code


async def _stream_logs(client: Any, job_id: str, out: TextIO) -> None:
    async for lines in client.tail_job_logs(job_id):
        out.write(lines)
        out.flush()


def _wait_terminal(client: Any, job_id: str, timeout_s: float = 60.0) -> str:
    """The job's final status (the log stream can end a moment before it is recorded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL_STATUSES or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.submit",
        description="Submit a job spec (infra/jobs/*.yaml) to a Ray cluster and wait for it.",
        epilog="Arguments after `--` are appended to the entrypoint.",
    )
    parser.add_argument("spec", help="job spec YAML (infra/jobs/process.yaml, ...)")
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS"),
        help="the cluster's dashboard, e.g. http://127.0.0.1:8265 (default: "
        "RAY_API_SERVER_ADDRESS or RAY_ADDRESS)",
    )
    parser.add_argument(
        "--set",
        dest="values",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value of the entrypoint's {NAME}",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="environment variable of the job (its value here when none is given)",
    )
    parser.add_argument(
        "--no-working-dir",
        action="store_true",
        help="do not upload this checkout: run the project installed in the cluster's image",
    )
    parser.add_argument("--submission-id", help="the job's id (default: generated)")
    parser.add_argument("--no-wait", action="store_true", help="submit, print the id, return")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the entrypoint and runtime_env only"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra_args: list[str] = []
    if "--" in argv:
        index = argv.index("--")
        argv, extra_args = argv[:index], argv[index + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        values = parse_assignments(args.values)
        env = env_from_options(args.env, os.environ)
        if args.dry_run:
            print(fill_entrypoint(spec, values, extra_args))
            print(yaml.safe_dump(build_runtime_env(spec, env, not args.no_working_dir)), end="")
            return 0
        fill_entrypoint(spec, values, extra_args)  # report bad values before connecting
    except SpecError as error:
        print(f"infra.submit: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not args.address:
        print("infra.submit: error: give --address (or set RAY_ADDRESS)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return submit(
            spec,
            args.address,
            values,
            extra_args,
            env=env,
            upload=not args.no_working_dir,
            wait=not args.no_wait,
            submission_id=args.submission_id,
        )
    except SubmitError as error:
        print(f"infra.submit: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
