"""The benches' cache: one JSON file per finished result, named by its spec's key.

Both benches use it: ``bench`` stores a :class:`~wrapcodec.bench.points.Point` under its
:class:`~wrapcodec.bench.points.PointSpec`'s key, ``bench-effort`` an
:class:`~wrapcodec.bench.effort.EffortRun` under its
:class:`~wrapcodec.bench.effort.EffortSpec`'s key. A key is the hash of everything that
determines the result (:func:`digest`), so a rerun reuses finished results, an interrupted run
resumes, and a result whose inputs changed is measured again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from wrapcodec.paths import atomic_write

R = TypeVar("R", bound=BaseModel)


class Keyed(Protocol):
    """A spec: what determines one result, with the cache key of it."""

    def key(self) -> str: ...


def digest(fields: dict[str, Any]) -> str:
    """The cache key of ``fields``: SHA-256 of their sorted JSON, 24 hex digits."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


class Cache(Generic[R]):
    """Finished results of type ``model`` as one JSON file each, written atomically.

    ``key_of``, for results that carry their spec, gives the key a result was measured
    under: an entry that does not match the key it is read for is measured again, like a
    damaged one."""

    def __init__(
        self, folder: Path, model: type[R], key_of: Callable[[R], str] | None = None
    ) -> None:
        self.folder = folder
        self.model = model
        self.key_of = key_of
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, spec: Keyed) -> Path:
        """The file of ``spec``'s result."""
        return self.folder / f"{spec.key()}.json"

    def get(self, spec: Keyed) -> R | None:
        """``spec``'s result, or None when it is not there (or damaged, or of another key)."""
        path = self.path(spec)
        if not path.exists():
            return None
        try:
            result = self.model.model_validate_json(path.read_text())
        except ValueError:
            return None  # a damaged entry is measured again
        if self.key_of is not None and self.key_of(result) != spec.key():
            return None
        return result

    def put(self, spec: Keyed, result: R) -> None:
        """Store ``spec``'s result."""
        text = result.model_dump_json()
        atomic_write(self.path(spec), lambda p: p.write_text(text))
