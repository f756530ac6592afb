"""What a file argument names, resolved in one place: one file, a glob, a folder, or a URI.

INPUT, ``--known``, PARTS (``pipeline merge``) and RESULTS (``pipeline report``) all take the
same four shapes, and a user who learns one expects the others to read alike: a folder means
its files of the kind the command reads (never hidden ones, such as a checkpoint), a glob
means what the shell would match, and a URI is reached first so that a store that does not
answer is named in one line before anything is read. What each command then requires (at
least one file, a single kind, a results schema) stays with the command, which knows what
to say.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from pipeline.core.values import is_uri
from pipeline.state import objects
from pipeline.state.objects import GLOB_CHARS


@dataclass(frozen=True, slots=True)
class Named:
    """The files one argument names."""

    spec: str  # as given
    paths: list[str]  # local files in sorted order, URIs listed, or the URI itself
    remote: bool
    pattern: bool  # a folder or a glob: may name many files, or none yet

    @property
    def several(self) -> bool:
        return self.pattern or len(self.paths) > 1


def is_pattern(spec: str) -> bool:
    """A glob: one of ``*?[`` anywhere in it."""
    return any(c in spec for c in GLOB_CHARS)


def named(
    spec: str | Path, *, kinds: tuple[str, ...], list_remote: bool = True, recursive: bool = False
) -> Named:
    """The files ``spec`` names. ``kinds``: the name patterns (``*.parquet``) a folder's
    files must match; a glob's matches are taken as the user wrote it. A URI is reached
    first; with ``list_remote`` a folder URI (ending in ``/``, every subfolder too when
    ``recursive``) or a glob in its last segment is listed, else polars reads it as given."""
    text = str(spec)
    if is_uri(text):
        objects.reach(text)  # a store that does not answer is named here, in one line
        folder, pattern = text.endswith("/"), is_pattern(text)
        # A store lists one folder at a time: a glob in an earlier segment is polars's to read.
        listable = folder or is_pattern(text.rpartition("/")[2])
        if not list_remote or not listable:
            return Named(text, [text], remote=True, pattern=folder or pattern)
        if folder and recursive:
            found = objects.parquet_under(text)
        else:
            found = objects.matching(text, kinds[0])
        return Named(text, [p for p in found if _kind(p, kinds) or pattern], True, True)
    path = Path(text)
    if path.is_dir():
        files = (p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        return Named(text, sorted(str(p) for p in files if _kind(p.name, kinds)), False, True)
    if is_pattern(text):
        matched = sorted(p for p in glob.glob(text) if Path(p).is_file())  # noqa: PTH207
        return Named(text, matched, remote=False, pattern=True)
    return Named(text, [text], remote=False, pattern=False)


def _kind(name: str, kinds: tuple[str, ...]) -> bool:
    base = name.rsplit("/", 1)[-1].lower()
    return any(fnmatch(base, kind) for kind in kinds)
