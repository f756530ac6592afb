"""The deploy files (deploy/): valid Kubernetes, the real command line, the failure policy
that the exit codes need, and deploy/README.md's shell blocks.

Manifests are applied months after they are written, against a CLI that has moved on and a
cluster that rejects what it does not know. So each manifest is validated against the
Kubernetes schema in strict mode (an unknown or misspelt field fails), and each container's
``pipeline`` command line is parsed by the real click command and validated by the real
settings (a renamed option or a bad value fails), here rather than in a cluster at night.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from pipeline.app.config import ENV_PREFIX, RunConfig, load_config
from pipeline.auth.tokens import load_tokens_file
from pipeline.cli.commands import cli
from pipeline.inputs.shards import resolve_shard

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
README = DEPLOY / "README.md"

# The oldest Kubernetes deploy/README.md promises (backoffLimitPerIndex, FailIndex and
# podReplacementPolicy are on by default there), and the newest schema the package ships.
VERSIONS = ("1.31", kubernetes_validate.latest_version())

# What Kubernetes would put in the variables that the args refer to as $(NAME).
SAMPLE_ENV = {"JOB_NAME": "ghl-import-nightly-29137020", "AWS_REGION": "us-east-1"}
JOB_NAME_LABEL = "metadata.labels['batch.kubernetes.io/job-name']"
VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[A-Za-z0-9_-]*)[ \t]*$")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def jobs() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Job spec of the manifests: a Job's own, and a CronJob's template."""
    for path in MANIFESTS:
        for doc in documents(path):
            name = f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"
            if doc["kind"] == "Job":
                yield name, doc["spec"]
            elif doc["kind"] == "CronJob":
                yield name, doc["spec"]["jobTemplate"]["spec"]


JOBS = dict(jobs())


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    pod = spec["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def pipeline_container(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in containers(spec) if c["name"] == "pipeline"]
    return container


def expanded_args(container: dict[str, Any]) -> list[str]:
    """The container's args with every $(VAR) replaced as Kubernetes would: only a
    variable of the container's own env is expanded (another stays literal, which is never
    what the author meant, so it fails here)."""
    defined = {entry["name"] for entry in container.get("env", [])}
    args = [str(arg) for arg in container.get("args", [])]
    for arg in args:
        for name in VAR_REFERENCE.findall(arg):
            assert name in defined, f"$({name}) in {arg!r} is not in the container's env"
    return [VAR_REFERENCE.sub(lambda m: SAMPLE_ENV[m.group(1)], arg) for arg in args]


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """``pipeline ARGV`` as the real CLI parses it: the subcommand and its parameters. An
    unknown option or a missing argument raises click's UsageError."""
    name, *rest = argv
    command = cli.commands.get(name)
    while isinstance(command, click.Group) and rest:  # pipeline oauth export-tokens
        name, *rest = rest
        command = command.commands.get(name)
    assert command is not None, f"pipeline has no command {name!r}"
    with command.make_context(name, rest) as ctx:
        return name, dict(ctx.params)


def option(argv: list[str], *names: str) -> str | None:
    """The value of an option in ``argv`` (the last one given), by any of its names."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(f"{name}="):
                value = arg.split("=", 1)[1]
    return value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No GHL_* or engine variable of the test's own environment leaks into a check."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) or name in {
            "JOB_COMPLETION_INDEX",
            "CLOUD_RUN_TASK_INDEX",
            "AWS_BATCH_JOB_ARRAY_INDEX",
            "SLURM_ARRAY_TASK_ID",
        }:
            monkeypatch.delenv(name)
    return monkeypatch


# -- the manifests are Kubernetes ----------------------------------------------------------


def test_the_manifests_are_there() -> None:
    """An empty glob would pass every test below: the Job and the CronJob must exist."""
    kinds = {doc["kind"] for path in MANIFESTS for doc in documents(path)}
    assert {"Job", "CronJob", "Secret", "ServiceAccount"} <= kinds
    assert any(name.startswith("job.yaml:Job/") for name in JOBS)
    assert any(name.startswith("cronjob.yaml:CronJob/") for name in JOBS)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    problems = []
    for doc in documents(path):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            # Only the message and the place: the exception's repr holds the whole schema.
            where = "/".join(str(part) for part in exc.path)
            problems.append(f"{doc['kind']} at {where}: {exc.message}")
    assert not problems, f"{path.name} (Kubernetes {version}): {problems}"


# -- the Job's failure handling fits the exit codes ----------------------------------------


@pytest.mark.parametrize("name", sorted(JOBS))
def test_the_failure_policy_follows_the_exit_codes(name: str) -> None:
    spec = JOBS[name]
    assert spec["completionMode"] == "Indexed"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimitPerIndex"] >= 1
    # A failed index must not stop the others (their parts are still wanted).
    assert "maxFailedIndexes" not in spec
    assert spec["podReplacementPolicy"] == "Failed"
    rules = spec["podFailurePolicy"]["rules"]

    def action_on_exit(code: int) -> str:
        """The first rule that matches a container exiting ``code`` without a disruption
        (Kubernetes applies the first match; none matching counts the failure)."""
        for rule in rules:
            requirement = rule.get("onExitCodes")
            if requirement is None:
                continue
            assert requirement.get("containerName", "pipeline") == "pipeline"
            listed = code in requirement["values"]
            if listed == (requirement["operator"] == "In"):
                return str(rule["action"])
        return "Count"

    # 1: the part is written, rows need a person; 2: usage error. Neither is retried.
    assert action_on_exit(1) == "FailIndex"
    assert action_on_exit(2) == "FailIndex"
    # Interrupted (SIGTERM, SIGINT), killed (OOM) or an unexpected failure: retried.
    for code in (70, 130, 137, 143):
        assert action_on_exit(code) == "Count", f"exit {code}"
    # A drain's or a preemption's SIGTERM: retried without counting.
    ignored = [
        condition
        for rule in rules
        if rule["action"] == "Ignore"
        for condition in rule.get("onPodConditions", [])
    ]
    assert {"type": "DisruptionTarget", "status": "True"} in ignored
    assert not any(rule["action"] == "FailJob" for rule in rules)
    # SIGTERM gives requests in flight up to 10 s, then the part and checkpoint are written.
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def comment_above(path: Path, key: str) -> str:
    """The comment lines right above ``key:`` in ``path``, with the key's own line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:")]
    start = at
    while start > 0 and lines[start - 1].strip().startswith("#"):
        start -= 1
    return "\n".join(lines[start : at + 1])


@pytest.mark.parametrize("name", sorted(JOBS))
def test_the_job_has_a_deadline_sized_from_the_plan(name: str) -> None:
    """Without ``activeDeadlineSeconds`` a task that never ends (an API that never answers)
    holds the import open for good. Its comment says how to size it from the figure the
    check (and the dry run) really prints, and a nightly Job's ends before the next night."""
    deadline = JOBS[name].get("activeDeadlineSeconds")
    assert isinstance(deadline, int) and deadline >= 3600, f"{name}: {deadline!r}"
    comment = comment_above(DEPLOY / "kubernetes" / name.split(":")[0], "activeDeadlineSeconds")
    assert "estimated sending time" in comment and "pipeline check" in comment, comment
    assert "estimated sending time" in (ROOT / "pipeline" / "app" / "preflight.py").read_text()
    if name.startswith("cronjob.yaml:"):
        (cron,) = documents(DEPLOY / "kubernetes" / "cronjob.yaml")
        minute, hour, *daily = cron["spec"]["schedule"].split()
        assert daily == ["*", "*", "*"] and minute.isdigit() and hour.isdigit()
        assert deadline < 24 * 3600  # stopped before the next night is due


def test_the_store_is_configured_as_the_deploy_readme_says() -> None:
    """The tests reach their S3 (moto, at a plain http:// endpoint) with exactly the
    variables deploy/README.md has a person put in the Secret ghl-s3, and the region the
    manifests set: no AWS_ALLOW_HTTP nor any other setting that only a test would know."""
    from tests.e2e.test_storage import S3_VARIABLES

    text = README.read_text(encoding="utf-8")
    secret = text.split("kubectl create secret generic ghl-s3", 1)[1].split("```", 1)[0]
    named = set(re.findall(r"--from-literal=([A-Z0-9_]+)=", secret))
    regions = {
        entry["name"]
        for spec in JOBS.values()
        for entry in pipeline_container(spec).get("env", [])
        if entry["name"].startswith("AWS_")
    }
    assert set(S3_VARIABLES) == named | regions
    (example,) = documents(DEPLOY / "kubernetes" / "secret-s3.example.yaml")
    assert set(example["stringData"]) == named


# -- the command lines are the real CLI's --------------------------------------------------


@pytest.mark.parametrize("name", sorted(JOBS))
def test_the_command_line_parses_and_matches_the_job(
    name: str, clean_env: pytest.MonkeyPatch
) -> None:
    spec = JOBS[name]
    container = pipeline_container(spec)
    assert "command" not in container, "the image's entrypoint is pipeline; give args only"
    argv = expanded_args(container)
    problem = None
    try:
        command, params = parse(argv)
    except click.UsageError as exc:
        problem = exc.format_message()
    assert problem is None, f"{name}: pipeline {shlex.join(argv)}: {problem}"
    assert command == "run"

    # The settings the task would run with: the command line, then the container's GHL_*
    # variables, validated together as `pipeline run` does.
    for entry in container.get("env", []):
        if entry["name"].startswith(ENV_PREFIX) and "value" in entry:
            field = entry["name"].removeprefix(ENV_PREFIX).lower()
            assert field in RunConfig.model_fields, f"{entry['name']} is not a setting"
            clean_env.setenv(entry["name"], str(entry["value"]))
    given = {
        key: value
        for key, value in params.items()
        if key in RunConfig.model_fields and value is not None and value != ()
    }
    config = load_config(given, params.get("config_file"))

    # Kubernetes gives the index, not the count: the count must be the Job's.
    completions = spec["completions"]
    assert config.shard_count == completions, "--shard-count must equal completions"
    assert 1 <= spec["parallelism"] <= completions
    last = resolve_shard(
        config.shard, config.shard_count, {"JOB_COMPLETION_INDEX": str(completions - 1)}
    )
    assert last is not None
    assert (last.index, last.count) == (completions - 1, completions)
    assert last.source == "Kubernetes Indexed Job (JOB_COMPLETION_INDEX)"

    # A retried task must continue its part, and the last one merges.
    assert params["resume"] is True
    assert "--merge" in argv
    output = option(container["args"], "-o", "--output")
    assert output is not None
    # One folder per Job, the same for every task and every retry of it: the Job's name.
    assert "$(JOB_NAME)" in output
    (job_name,) = [e for e in container["env"] if e["name"] == "JOB_NAME"]
    assert job_name["valueFrom"]["fieldRef"]["fieldPath"] == JOB_NAME_LABEL
    part = f".part-{completions - 1:05d}-of-{completions:05d}.parquet"
    assert last.part_name(output).endswith(part)


@pytest.mark.parametrize("name", sorted(JOBS))
def test_the_pod_can_run_on_a_read_only_image(name: str) -> None:
    """readOnlyRootFilesystem: the working folder (the local journal and lock) and /tmp are
    volumes, and the tokens file is in a mounted Secret."""
    spec = JOBS[name]
    container = pipeline_container(spec)
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in mounts[container["workingDir"]]
    assert "emptyDir" in mounts["/tmp"]
    tokens_file = option(container["args"], "--tokens-file")
    if tokens_file is not None:
        folder = str(Path(tokens_file).parent)
        assert "secret" in mounts[folder], f"{tokens_file} is not in a mounted Secret"


def test_the_nightly_job_sends_only_new_rows_one_night_at_a_time() -> None:
    (name,) = [n for n in JOBS if n.startswith("cronjob.yaml:")]
    (cron,) = documents(DEPLOY / "kubernetes" / "cronjob.yaml")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    args = pipeline_container(JOBS[name])["args"]
    known = option(args, "--known")
    assert known is not None
    # A glob of Parquet names: a folder would also hold the journals' checkpoints, which
    # polars refuses to read as Parquet.
    assert known.endswith(".parquet")
    assert "*" in known


def test_the_example_secret_is_a_tokens_file_and_its_tokens(tmp_path: Path) -> None:
    """The example tokens file loads, and every token file it names is a key of the same
    Secret, where the Job mounts it."""
    (secret,) = [
        doc
        for doc in documents(DEPLOY / "kubernetes" / "secret-tokens.example.yaml")
        if doc["kind"] == "Secret"
    ]
    data = secret["stringData"]
    container = pipeline_container(JOBS[next(n for n in JOBS if n.startswith("job.yaml:"))])
    tokens_file = option(container["args"], "--tokens-file")
    assert tokens_file is not None
    mount = str(Path(tokens_file).parent)
    for key, value in data.items():
        (tmp_path / key).write_text(value, encoding="utf-8")
    text = (tmp_path / Path(tokens_file).name).read_text(encoding="utf-8")
    (tmp_path / "local.toml").write_text(text.replace(f"{mount}/", f"{tmp_path}/"))
    tokens = load_tokens_file(tmp_path / "local.toml", {})
    assert len(tokens.by_location) >= 2
    for spec in tomllib.loads(text)["tokens"].values():
        assert spec["file"].startswith(f"{mount}/")
        assert Path(spec["file"]).name in data
    # Placeholders, plainly so: never a real token in the repository.
    for key, value in data.items():
        if key != Path(tokens_file).name:
            assert value.startswith("REPLACE-WITH-")


# -- the image ------------------------------------------------------------------------------


def test_the_dockerfile_matches_the_manifests() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.12-slim\s*$", dockerfile, re.M)
    (user,) = re.findall(r"^USER (\d+)(?::\d+)?\s*$", dockerfile, re.M)
    assert user != "0"
    assert re.search(r'^ENTRYPOINT \["pipeline"\]\s*$', dockerfile, re.M)
    for spec in JOBS.values():
        assert spec["template"]["spec"]["securityContext"]["runAsUser"] == int(user)
    # Everything copied from the build context (the repository root) exists and is not
    # excluded by the Dockerfile's own ignore file.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+\s*$", dockerfile, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, source


# -- deploy/README.md -----------------------------------------------------------------------


def code_blocks(text: str, languages: set[str]) -> list[tuple[int, str]]:
    """The fenced blocks in ``languages``, each with its first line's number; a block in a
    list item is dedented by its fence's indentation, as a reader copies it."""
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None or not match.group("lang"):
            i += 1
            continue
        indent, start = len(match.group("indent")), i + 1
        end = start
        while lines[end].strip() != "```":
            end += 1
        if match.group("lang") in languages:
            body = "\n".join(line[indent:] for line in lines[start:end])
            blocks.append((start + 1, textwrap.dedent(body) + "\n"))
        i = end + 1
    return blocks


SHELL_BLOCKS = code_blocks(README.read_text(encoding="utf-8"), {"sh", "bash", "shell"})


def test_the_readme_has_shell_blocks() -> None:
    assert len(SHELL_BLOCKS) >= 5


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize(("line", "block"), SHELL_BLOCKS, ids=[str(n) for n, _ in SHELL_BLOCKS])
def test_readme_shell_block_is_shell(line: int, block: str) -> None:
    result = subprocess.run(
        ["bash", "-n"], input=block, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and not result.stderr, f"line {line}: {result.stderr}"


def pipeline_commands(block: str) -> list[list[str]]:
    """The ``pipeline ...`` command lines of a shell block (continuation lines joined,
    leading VAR=value assignments dropped), as argv after the program's name."""
    commands: list[list[str]] = []
    for logical in block.replace("\\\n", " ").splitlines():
        words = logical.split()
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words.pop(0)
        if not words or Path(words[0]).name != "pipeline":
            continue
        argv = shlex.split(logical, comments=True)
        while Path(argv[0]).name != "pipeline":
            argv.pop(0)
        commands.append(argv[1:])
    return commands


README_COMMANDS = [
    (line, argv) for line, block in SHELL_BLOCKS for argv in pipeline_commands(block)
]


def test_the_readme_has_pipeline_commands() -> None:
    assert {argv[0] for _, argv in README_COMMANDS} >= {"run", "merge", "report", "oauth"}


@pytest.mark.parametrize(
    ("line", "argv"), README_COMMANDS, ids=[f"{n}-{a[0]}" for n, a in README_COMMANDS]
)
def test_readme_pipeline_command_parses(
    line: int, argv: list[str], clean_env: pytest.MonkeyPatch
) -> None:
    problem = None
    try:
        parse(argv)
    except click.UsageError as exc:
        problem = exc.format_message()
    assert problem is None, f"deploy/README.md:{line}: pipeline {shlex.join(argv)}: {problem}"
