"""Listing objects in object storage (``s3://``, ``gs://``, ``az://``), for the commands that
take a folder or a glob of results: ``pipeline merge`` and ``--known``.

Polars reads a URI, or a glob of them, itself; what it cannot do is tell a results file from
the other objects beside it. Since a task of an array job keeps its journal's checkpoint in a
hidden folder next to its part (``checkpoints``), a folder of results in a bucket always may
hold objects that are not results: listing and filtering here keeps those out.
"""

from __future__ import annotations

from fnmatch import fnmatch

from pipeline.errors import UsageError, first_line

GLOB_CHARS = "*?["


def names(folder: str, *, recursive: bool = False) -> list[str]:
    """The objects in ``folder`` (a URI ending in ``/``), as paths relative to it; with
    ``recursive``, those in its subfolders too. Sorted."""
    import obstore
    from obstore.store import from_url

    try:
        store = from_url(folder)
        if recursive:
            found = [str(item["path"]) for item in obstore.list(store).collect()]
        else:
            listed = obstore.list_with_delimiter(store)
            found = [str(item["path"]) for item in listed["objects"]]
    except Exception as exc:  # obstore's own errors: a bad URL, no access, no bucket
        raise UsageError(f"{folder}: cannot be listed ({first_line(exc)})") from exc
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
