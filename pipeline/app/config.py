"""Run configuration: one typed model, filled from four places in a fixed order.

Command line > environment (``GHL_*``) > ``--config`` TOML file > defaults. The merging and
the validation are pydantic-settings' job: every value is checked against its field (types,
ranges, choices), an unknown key is an error that names it, and one error message lists
every problem at once. The command line's options are generated from the same fields, so
an option, its environment variable and its config key can never drift apart.

Per-invocation switches (``--dry-run``, ``--resume``, ``--overwrite``, ``--debug``) are not
configuration and live on the command line only. Tokens are never configuration values:
only *where* to find them is (``token_env``, ``token_file``, ``tokens_file``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pipeline.core import constants, logs
from pipeline.core.errors import UsageError
from pipeline.core.values import (
    DEFAULT_FAIL_ON,
    DEFAULT_ID_MAX_LENGTH,
    DEFAULT_ID_PATTERN,
    DEFAULT_LOOKUP_WAIT_S,
    check_base_url,
    parse_fail_on,
    parse_rate,
    parse_separator,
)

ENV_PREFIX = "GHL_"
# Settings whose bad values are never repeated in a message: a token pasted where a
# variable's name belongs, or a webhook URL (its key). A Pushgateway URL is shown with its
# credentials redacted (``_register_secrets``).
_NEVER_SHOWN = frozenset({"token_env", "notify"})
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Problem(ValueError):
    """A rule that a value broke, with the setting it belongs to: an error raised by a
    model validator has no setting of its own in pydantic's report."""

    def __init__(self, key: str, value: Any, rule: str) -> None:
        super().__init__(rule)
        self.key, self.value = key, value


def _rule(exc: UsageError, flag: str, value: str) -> str:
    """A settings parser's message without the option and value it starts with: the
    configuration's message names both itself."""
    return str(exc).removeprefix(f"{flag} {value!r}: ")


class RunConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    base_url: str = Field(constants.DEFAULT_BASE_URL, description="API root.")
    api_version: Literal["v3", "2023-02-21", "2021-07-28", "2021-04-15"] = Field(
        constants.DEFAULT_API_VERSION, description="The Version header HighLevel is sent."
    )
    rate: str | None = Field(
        None,
        description="Your own per-location ceiling, N/Ts; the limit each location's answers "
        "announce holds as well (unset: follow the announced limit, 100/10s until known).",
    )
    concurrency: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = Field(
        "auto",
        description="Requests in flight at most, across all locations; auto sizes it to the "
        "latency as answers come in (see the README's 'How fast').",
    )
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds per request.")
    max_attempts: int = Field(5, ge=1, le=100, description="Create attempts per row.")
    max_retry_wait: float = Field(
        300.0, ge=0, le=86_400, description="Seconds a row may wait between attempts, in all."
    )
    lookup_wait: float = Field(
        DEFAULT_LOOKUP_WAIT_S,
        ge=0,
        le=3_600,
        description="Seconds a row whose conversation exists is searched for its id while "
        "the search index lags (growing waits); then it ends id_not_found_yet.",
    )
    backoff_base: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Seconds the first retry waits at most; doubles each attempt, up to 30.",
    )
    contact_column: str | None = Field(
        None, description="The contact ID column, if not contactId/contact_id."
    )
    location_column: str | None = Field(
        None, description="The location ID column, if not locationId/location_id."
    )
    location_id: str | None = Field(
        None, description="One location for every row, for a file with no location column."
    )
    override_location: bool = Field(
        False, description="With --location-id: use it even though the file has a location column."
    )
    separator: str | None = Field(
        None,
        description="The CSV's separator: comma, semicolon, tab, pipe or one character "
        "(unset: read from the header line; a .tsv is tab-separated).",
    )
    sheet: str | None = Field(
        None, description="The worksheet of an .xlsx input to read (unset: the first)."
    )
    keep_columns: str | None = Field(
        None, description="Comma-separated input columns to carry into the results."
    )
    id_pattern: str = Field(DEFAULT_ID_PATTERN, description="Regex an ID must fully match.")
    id_max_length: int = Field(
        DEFAULT_ID_MAX_LENGTH,
        ge=1,
        le=10_000,
        description="The longest ID accepted.",
    )
    token_env: str = Field("GHL_TOKEN", description="Environment variable holding the token.")
    token_file: Path | None = Field(None, description="Read the token from this file instead.")
    tokens_file: Path | None = Field(
        None, description="TOML or CSV mapping each location to its own token's variable or file."
    )
    oauth_file: Path | None = Field(
        None,
        description="OAuth credentials of a Marketplace app (TOML or JSON; the tool keeps "
        "it: it rewrites the refresh and access tokens there). Instead of a token.",
    )
    refresh_margin: float = Field(
        300.0,
        ge=0,
        le=43_200,
        description="Seconds before an OAuth access token expires that it is refreshed; at "
        "most half the token's lifetime.",
    )
    shard: str | None = Field(
        None,
        description="K/N: this task of an array job sends only its part of the locations "
        "and writes NAME.part-K-of-N.parquet (unset: from the engine's environment, if any).",
    )
    shard_count: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="The number of tasks, where the engine's environment gives only the "
        "index (Kubernetes, AWS Batch).",
    )
    merge: bool = Field(
        False,
        description="With a shard: once this task's part is written and all N parts are "
        "there, check them and write OUTPUT from them (the last task to finish does it).",
    )
    checkpoint_interval: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="Seconds between copies of the journal of an output in object storage "
        "to a checkpoint beside it, which a restarted task takes up.",
    )
    state_dir: Path = Field(
        Path(".pipeline-state"),
        description="Local folder for the journal and lock of an output in object storage.",
    )
    allow_insecure_http: bool = Field(
        False, description="Allow an http:// base URL that is not loopback."
    )
    fail_on: str = Field(
        DEFAULT_FAIL_ON,
        description="Statuses or error codes (comma-separated) that make the run exit 1; "
        "any other outcome exits 0.",
    )
    daily_reserve: int = Field(
        20,
        ge=0,
        le=100_000,
        description="Requests of a location's daily quota kept for searches and retries: "
        "rows beyond what is left today, less this, are skipped (daily_quota_exhausted) "
        "without being sent.",
    )
    daily_quota: int = Field(
        constants.DEFAULT_DAILY_LIMIT,
        ge=1,
        description="Requests per location per day, for the dry-run estimate.",
    )
    workers: int = Field(
        1, ge=1, le=64, description="Processes sending at once; each owns whole locations."
    )
    http_stack: Literal["aiohttp", "httpx", "httpx-aiohttp"] = Field(
        "aiohttp", description="HTTP client library behind the API client."
    )
    progress: Literal["auto", "bar", "log", "none"] = Field(
        "auto", description="A live bar (auto: on a terminal), structured log lines, or nothing."
    )
    progress_interval: float = Field(
        5.0, gt=0, le=3600, description="Seconds between progress log lines."
    )
    known: str | None = Field(
        None,
        description="Earlier results files (a path, a glob, a folder or a URI): a pair that "
        "has a conversation id there is not sent again (exists / known_from_earlier_run).",
    )
    notify: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Send the run's summary to this URL (apprise: slack://, mailto://, "
        "json://, ...); repeatable, or several separated by spaces. Redacted in the logs.",
    )
    notify_on: Literal["failure", "always"] = Field(
        "failure", description="When to notify: failure is what --fail-on decides."
    )
    metrics_file: Path | None = Field(
        None,
        description="Write the run's metrics here in Prometheus' text format (the node "
        "exporter's textfile collector), atomically.",
    )
    pushgateway: str | None = Field(
        None, description="Push the run's metrics to this Prometheus Pushgateway URL."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log rendering; auto is JSON when stderr is not a terminal."
    )
    log_file: Path | None = Field(
        None,
        description="Append the logs to this file as JSON lines instead of stderr (stderr "
        "keeps only the one-line errors).",
    )
    summary: Literal["table", "json", "none"] = Field(
        "table",
        description="The summary on standard output: a table, one JSON object, or nothing.",
    )

    @field_validator("notify", mode="before")
    @classmethod
    def _notify(cls, value: Any) -> Any:
        """Several URLs in one string (the environment, a config file's string) are
        separated by whitespace; a list or the repeated option gives them one by one."""
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list | tuple):
            return [url for item in value for url in str(item).split()]
        return value

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        if not _VARIABLE_NAME.match(value):
            raise ValueError(
                "expected the name of an environment variable (letters, digits and _), not a token"
            )
        return value

    @field_validator("fail_on")
    @classmethod
    def _fail_on(cls, value: str) -> str:
        try:
            parse_fail_on(value)
        except UsageError as exc:
            raise ValueError(_rule(exc, "--fail-on", value)) from None
        return value

    @field_validator("separator")
    @classmethod
    def _separator(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse_separator(value)
        except UsageError as exc:
            raise ValueError(_rule(exc, "--separator", value)) from None

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from pipeline.inputs.shards import parse_shard

        try:
            parse_shard(value)
        except UsageError as exc:
            raise ValueError(_rule(exc, "--shard", value)) from None
        return value

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_rate(value)
        except UsageError as exc:
            raise ValueError(_rule(exc, "--rate", value)) from None
        return value

    @model_validator(mode="after")
    def _base_url(self) -> Self:
        try:
            self.base_url = check_base_url(
                self.base_url, allow_insecure_http=self.allow_insecure_http
            )
        except UsageError as exc:
            rule = _rule(exc, "--base-url", self.base_url)
            raise _Problem("base_url", self.base_url, rule) from None
        return self


def load_config(command_line: dict[str, Any], config_file: Path | None) -> RunConfig:
    """Merge the sources in precedence order and validate; any problem is one UsageError."""
    file_values = read_config_file(config_file) if config_file is not None else {}
    environment = {
        name.upper().removeprefix(ENV_PREFIX).lower(): value
        for name, value in os.environ.items()
        if name.upper().startswith(ENV_PREFIX)
    }
    _register_secrets([command_line, environment, file_values], os.environ)

    class _Sources(RunConfig):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                InitSettingsSource(settings_cls, init_kwargs=file_values),
            )

    try:
        merged = _Sources(**command_line)
        # A plain RunConfig (already validated): it crosses to worker processes, and a class
        # defined in this function cannot be pickled.
        return RunConfig.model_construct(**dict(merged))
    except ValidationError as exc:
        raise UsageError(_describe(exc, config_file, command_line, file_values)) from None


def _register_secrets(sources: list[dict[str, Any]], environ: Mapping[str, str]) -> None:
    """Register with the log redaction, before any validation can print, every secret the
    settings carry in any source: notification URLs (a webhook's URL is its key), a
    Pushgateway URL's credentials (a base URL's too, which are refused), a token pasted
    where a variable's name belongs, and the token in the variable named."""
    variables = {"GHL_TOKEN"}
    for values in sources:
        keys = ("notify", "pushgateway", "token_env", "base_url")
        words = {key: _words(values.get(key)) for key in keys}
        for url in words["notify"]:
            logs.register_secret(url)
        for url in words["pushgateway"] + words["base_url"]:  # refused with credentials
            logs.register_credentials(url)
        variables.update(name for name in words["token_env"] if _VARIABLE_NAME.match(name))
        for pasted in (name for name in words["token_env"] if not _VARIABLE_NAME.match(name)):
            logs.register_secret(pasted)
    for name in variables:
        logs.register_secret((environ.get(name) or "").strip())


def _words(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else [value]
    return [word for item in items if isinstance(item, str) for word in item.split()]


def read_config_file(path: Path) -> dict[str, Any]:
    """A ``--config`` file's settings, keyed as ``RunConfig``'s fields (not yet validated)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"--config {path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: cannot be read ({type(exc).__name__})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from exc
    table = data["run"] if isinstance(data.get("run"), dict) and len(data) == 1 else data
    # Keys are written like the options: "max-attempts" and "max_attempts" are the same key.
    return {str(key).replace("-", "_"): value for key, value in table.items()}


def _source(
    key: str, command_line: dict[str, Any], file_values: dict[str, Any], config_file: Path | None
) -> str:
    """Where a setting's value came from, in the precedence order: what to go and fix."""
    name = key.replace("_", "-")
    if key in command_line:
        return f"--{name}"
    variable = f"{ENV_PREFIX}{key.upper()}"
    if any(env.upper() == variable for env in os.environ):
        return f"{variable} in the environment"
    if key in file_values and config_file is not None:
        return f"{name} in {config_file}"
    return f"--{name}"


def _describe(
    exc: ValidationError,
    config_file: Path | None,
    command_line: dict[str, Any] | None = None,
    file_values: dict[str, Any] | None = None,
) -> str:
    """One line for every problem, naming where the bad value is (the option, the
    environment variable or the config file's key); a value that fits none of a field's
    forms (a number or ``auto``) is one problem naming each form, not one per form. A
    value where a variable's name belongs is never repeated: it may be a pasted token."""
    problems: dict[str, str] = {}
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else "configuration"
        name = key.replace("_", "-")
        if error["type"] == "extra_forbidden":
            problems[f"unknown {name}"] = f"unknown key {name!r}"
            continue
        message, value = error["msg"].removeprefix("Value error, "), error.get("input")
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _Problem):  # a rule across settings, told as its setting's
            key, value, message = cause.key, cause.value, str(cause)
            name = key.replace("_", "-")
        if key in problems:  # another form of the same field: "..., or should be 'auto'"
            head, _, got = problems[key].rpartition(" (got ")
            problems[key] = f"{head}, or {message.removeprefix('Input ')} (got {got}"
            continue
        source = _source(key, command_line or {}, file_values or {}, config_file)
        shown = logs.REDACTED if key in _NEVER_SHOWN else logs.scrub(repr(value))
        problems[key] = f"{name} ({source}): {message} (got {shown})"
    where = f" (command line, {ENV_PREFIX}* environment" + (
        f", {config_file})" if config_file else ")"
    )
    return "bad configuration" + where + ": " + "; ".join(problems.values())
