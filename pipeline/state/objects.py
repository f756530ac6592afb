"""Object storage (``s3://``, ``gs://``, ``az://``) as users configure it: where a store is,
whether it answers, and listing it, for every command that reads or writes a URI.

Polars reads and writes a URI itself, and ``obstore`` (the same Rust object store) lists,
and keeps a task's checkpoint (``checkpoints``). Both take the store's place and keys from
the cloud's usual environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...), and the
rules that make them agree live here:

- **An ``http://`` endpoint works as given.** An S3-compatible store in a cluster (MinIO,
  Ceph) is often plain http; polars allows that for an http endpoint by itself, the object
  store under obstore only with ``allow_http``, which ``open_store`` sets from the endpoint
  (``client_options``): nobody has to know of ``AWS_ALLOW_HTTP``.
- **A store that is misconfigured or does not answer stops the command at once, in one
  line that names what to set** (``reach``): before the first request, a malformed endpoint
  is refused (the object store would panic on it: a Rust backtrace and no message); then one
  request with few retries tells an address where nothing answers, refused keys or a
  missing bucket apart (``describe``), in seconds rather than after minutes of retries.
  Without keys in the environment the request goes unsigned and only tells whether the
  store answers: polars may find keys where obstore does not look (a boto3 profile).
  Every command reaches a URI through ``reach`` first (reading, ``--known``, ``merge``,
  ``report``, a remote output), so none ends with exit 70 on a store's error.

Listing: polars reads a URI, or a glob of them, itself; what it cannot do is tell a results
file from the other objects beside it. Since a task of an array job keeps its journal's
checkpoint in a hidden folder next to its part (``checkpoints``), a folder of results in a
bucket always may hold objects that are not results: listing and filtering here keeps those
out.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatch
from typing import Any
from urllib.parse import urlsplit

from pipeline.core.errors import UsageError, first_line

GLOB_CHARS = "*?["

# Where an S3 store is, in the object store's order of precedence; AWS_REGION names the
# host when none is set.
S3_ENDPOINTS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
S3_REGIONS = ("AWS_REGION", "AWS_DEFAULT_REGION")
_KINDS = {
    **dict.fromkeys(("s3", "s3a"), "S3"),
    **dict.fromkeys(("gs", "gcs"), "GCS"),
    **dict.fromkeys(("az", "azure", "abfs", "abfss", "adl"), "Azure"),
}
_KEYS = {
    "S3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or give the machine a role)",
    "GCS": "GOOGLE_APPLICATION_CREDENTIALS (or give the machine a service account)",
    "Azure": "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS token)",
}
# The variables that give obstore (and polars) keys without asking the machine.
_KEY_VARIABLES = {
    "S3": (
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ),
    "GCS": (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_PATH",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
    ),
    "Azure": (
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
    ),
}
_REFUSALS = ("PermissionDeniedError", "UnauthenticatedError")
# What the object store's http layer accepts as an endpoint; anything else panics in it.
_ENDPOINT = re.compile(
    r"^https?://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$"
)
_REGION = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# The probe's patience: a store that answers does so at once; one that does not is named in
# seconds, not after the default 10 retries over 3 minutes.
_PROBE_RETRY: dict[str, Any] = {
    "max_retries": 2,
    "retry_timeout": timedelta(seconds=10),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1)},
}
_PROBE_TIMEOUTS = {"connect_timeout": "5s", "timeout": "10s"}
_REACHED: set[tuple[str | None, str]] = set()  # (endpoint, root) of each store that answered


@dataclass(frozen=True, slots=True)
class Store:
    """Where one URI's objects are, as the environment configures it."""

    kind: str  # "S3", "GCS", "Azure"; "" for what polars reads alone (https://, file://)
    root: str  # scheme://bucket/
    endpoint: str | None = None  # an S3-compatible store's address
    endpoint_var: str | None = None  # the variable that named it

    @property
    def where(self) -> str:
        """The store, for a message: its address and who set it, or its kind."""
        if self.endpoint is not None:
            return f"the object store at {self.endpoint} ({self.endpoint_var})"
        return self.kind or "the object store"

    def client_options(self) -> dict[str, Any]:
        """The http client's options: plain http when the endpoint says http (what polars
        does by itself for the same endpoint)."""
        if self.endpoint is not None and self.endpoint.lower().startswith("http://"):
            return {"allow_http": True}
        return {}


def store_of(uri: str, environ: Mapping[str, str] | None = None) -> Store:
    """The store of ``uri``; a malformed endpoint or region (which the object store would
    panic on) is refused by the name of its variable."""
    env = os.environ if environ is None else environ
    scheme, _, rest = uri.partition("://")
    kind = _KINDS.get(scheme.lower(), "")
    root = f"{scheme}://{rest.split('/', 1)[0]}/"
    if kind != "S3":
        return Store(kind, root)
    endpoint_var = next((name for name in S3_ENDPOINTS if env.get(name, "").strip()), None)
    for name in S3_ENDPOINTS:
        value = env.get(name, "").strip()
        if value and not _ENDPOINT.match(value):
            raise UsageError(
                f"{name}={value!r}: not the address of an object store; set it to one such as "
                "https://minio.example.com or http://10.0.0.5:9000, or unset it for AWS S3"
            )
    if endpoint_var is None:
        for name in S3_REGIONS:
            value = env.get(name, "").strip()
            if value and not _REGION.match(value):
                raise UsageError(
                    f"{name}={value!r}: not an AWS region; set it to the bucket's region, "
                    "such as us-east-1"
                )
        return Store(kind, root)
    return Store(kind, root, env[endpoint_var].strip(), endpoint_var)


def open_store(url: str, *, probing: bool = False, unsigned: bool = False) -> Any:
    """An obstore store at ``url`` (a bucket, or a folder in one: its prefix), with the
    client options of its ``Store``; ``probing``: few retries, short timeouts (``reach``);
    ``unsigned``: requests without credentials. Every obstore store of this program is
    opened here."""
    from obstore.store import from_url

    options = store_of(url).client_options() | (_PROBE_TIMEOUTS if probing else {})
    try:
        return from_url(
            url,
            config={"skip_signature": True} if unsigned else None,
            client_options=options or None,  # type: ignore[arg-type]
            retry_config=_PROBE_RETRY if probing else None,  # type: ignore[arg-type]
        )
    except Exception as exc:  # obstore's own types: a bad URL, an unknown setting
        raise UsageError(describe(exc, url, "opened")) from exc


def reach(uri: str) -> None:
    """Make sure the store of ``uri`` is configured and answers, or stop with one line that
    says what to set. One request per store and process, before any other: an object that
    is not there is an answer (an output not written yet); an address where nothing
    answers, refused keys, a missing bucket are not. Other URIs (``https://``) are left to
    the command's own reading."""
    store = store_of(uri)
    if not store.kind or (store.endpoint, store.root) in _REACHED:
        return
    import obstore

    key = _key(uri)
    # With no keys in the environment, obstore would ask the machine for some (instance
    # metadata: seconds to time out off the cloud), and polars may find keys where obstore
    # does not look (a boto3 profile, `az login`): the probe then goes unsigned, and any
    # answer, a refusal too, shows that the store is there; the command's own reading
    # decides about access.
    signed = _keys_given(store.kind)
    handle = open_store(store.root, probing=True, unsigned=not signed)
    try:
        if key:
            obstore.head(handle, key)
        else:
            obstore.list_with_delimiter(handle)
    except FileNotFoundError:
        pass  # the store answered: no such object (yet)
    except Exception as exc:
        answered = _status(str(exc)) is not None or type(exc).__name__ in _REFUSALS
        if signed or not answered:
            raise UsageError(describe(exc, uri, "reached")) from exc
    _REACHED.add((store.endpoint, store.root))


def _keys_given(kind: str) -> bool:
    """Whether the environment gives the store's keys (or how to get them) itself."""
    return any(os.environ.get(name, "").strip() for name in _KEY_VARIABLES.get(kind, ()))


def _key(uri: str) -> str:
    """The object name of ``uri`` up to its first glob character, without a trailing
    ``/``: what the probe asks for."""
    path = uri.partition("://")[2].partition("/")[2]
    cut = min((path.index(c) for c in GLOB_CHARS if c in path), default=len(path))
    return path[:cut].rpartition("/")[0] if cut < len(path) else path.rstrip("/")


def describe(exc: BaseException, uri: str, doing: str = "reached") -> str:
    """One line for a store's error: what went wrong, and what to set. ``doing``: what
    could not be done to ``uri`` (reached, listed, read, written), for an error of no
    known kind."""
    store = store_of(uri)
    text = str(exc)
    code = _xml_code(text)
    status = _status(text)
    keys = _KEYS.get(store.kind, "the store's credentials")
    source = _credential_source(text)
    if source is not None:
        return (
            f"{uri}: no credentials for {store.where} (none in the environment, and {source} "
            f"gave none); set {keys}"
        )
    if "kind: Connect" in text or "error sending request" in text or "dns error" in text:
        why = _connect_reason(text)
        if store.endpoint is not None:
            return (
                f"{uri}: nothing answers at {store.where}: {why}; set {store.endpoint_var} to "
                "the store's address (http://HOST:PORT or https://HOST), or unset it for AWS S3"
            )
        hint = "; for an S3-compatible store, set AWS_ENDPOINT_URL" if store.kind == "S3" else ""
        return f"{uri}: {store.where} does not answer ({why}); check the network{hint}"
    refused = type(exc).__name__ in _REFUSALS
    if refused or code in _REFUSED or status in ("401", "403"):
        return (
            f"{uri}: {store.where} refused the credentials "
            f"({code or status or type(exc).__name__}); set {keys} to ones that may read, "
            "write and list there"
        )
    if code == "NoSuchBucket":
        also = f" and {store.endpoint_var}" if store.endpoint_var else ""
        return f"{uri}: {store.where} has no bucket {store.root}; check the URI's bucket{also}"
    if code in _OTHER_REGION or status == "301":
        return (
            f"{uri}: the bucket is in another region ({code or status}); set AWS_REGION to "
            "the bucket's region"
        )
    return f"{uri}: cannot be {doing}: {store.where} failed ({_short(text)})"


_REFUSED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
_OTHER_REGION = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed"})


def _credential_source(text: str) -> str | None:
    """The host of the failed request when it went to a source of credentials (instance
    metadata, STS, an OAuth token service) rather than to the store itself."""
    match = re.search(r"Error performing [A-Z]+ (\S+)", text)
    host = (urlsplit(match.group(1)).hostname or "") if match else ""
    if host.startswith(("169.254.", "fd00:ec2::", "sts.")) or any(
        word in host for word in ("metadata", "oauth2", "login.microsoftonline")
    ):
        return host
    return None


def _xml_code(text: str) -> str | None:
    """The error code of an S3 error body (``<Code>NoSuchBucket</Code>``)."""
    match = re.search(r"<Code>([A-Za-z]+)</Code>", text)
    return match.group(1) if match else None


def _status(text: str) -> str | None:
    match = re.search(r"status code: (\d{3})", text)
    return match.group(1) if match else None


def _connect_reason(text: str) -> str:
    """Why a connection failed, in a few words, from the object store's debug text."""
    for marker, reason in (
        ("ConnectionRefused", "connection refused"),
        ("dns error", "no such host"),
        ("TimedOut", "no answer in time"),
        ("InvalidContentType", "not TLS: an http:// address given as https://?"),
        ("certificate", "its TLS certificate is not trusted"),
    ):
        if marker in text:
            return reason
    return "no connection"


def _short(text: str) -> str:
    """A store's message without the debug dump the object store appends."""
    line = first_line(Exception(text.split("Debug source:")[0]))
    return line if len(line) <= 200 else line[:199] + "…"


@contextlib.contextmanager
def failures(uri: str, doing: str) -> Iterator[None]:
    """Turn a store's error inside the block into one ``UsageError`` line (``describe``);
    a ``UsageError`` raised inside passes unchanged."""
    try:
        yield
    except UsageError:
        raise
    except Exception as exc:  # obstore's own types, and OSError for a missing object
        raise UsageError(describe(exc, uri, doing)) from exc


def names(folder: str, *, recursive: bool = False) -> list[str]:
    """The objects in ``folder`` (a URI ending in ``/``), as paths relative to it; with
    ``recursive``, those in its subfolders too. Sorted."""
    import obstore

    reach(folder)
    store = open_store(folder)
    with failures(folder, "listed"):
        if recursive:
            found = [str(item["path"]) for item in obstore.list(store).collect()]
        else:
            listed = obstore.list_with_delimiter(store)
            found = [str(item["path"]) for item in listed["objects"]]
    return sorted(found)


def matching(spec: str, default_pattern: str) -> list[str]:
    """The URIs a URI names: itself; a folder's (ending in ``/``) objects that match
    ``default_pattern``; or those of a glob in the last path segment. Objects in hidden
    folders or with hidden names (a leading ``.``) are left out."""
    if not any(c in spec for c in GLOB_CHARS) and not spec.endswith("/"):
        return [spec]
    folder, _, pattern = spec.rpartition("/")
    pattern = pattern or default_pattern
    return [
        f"{folder}/{name}"
        for name in names(folder + "/")
        if fnmatch(name, pattern) and not name.startswith(".")
    ]


def parquet_under(folder: str) -> list[str]:
    """Every ``.parquet`` object under ``folder`` (a URI ending in ``/``), subfolders
    included, but none in a hidden folder (a checkpoint) or with a hidden name."""
    return [
        f"{folder}{path}"
        for path in names(folder, recursive=True)
        if path.endswith(".parquet") and not any(p.startswith(".") for p in path.split("/"))
    ]
