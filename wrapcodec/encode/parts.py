"""The work folder of a resumable encode (``encode --resume``): every segment coded is kept
there as it finishes, so that an encode stopped by anything (Ctrl-C, SIGTERM, SIGKILL, a
power cut) and started again codes only the segments it had not finished, and writes exactly
the bytes an uninterrupted encode would have.

The folder is ``OUT.parts`` beside the output. ``manifest.json`` names the encode it belongs
to: a hash of the source's bytes, of every setting that changes the output (not ``--jobs``
nor ``--dask``, which do not) and of the segments' ranges. Segment *k* is three files:
``k.payload`` and ``k.update`` (the container record's bytes) and ``k.json`` (the rest of
the record, the two files' lengths and hashes, and the segment's report), each written to a
temporary name and renamed, ``k.json`` last, so that a segment is there whole or not at all.
A segment whose files do not match its ``k.json`` is coded again. Nothing in the folder is
executed or unpickled: it is JSON and raw bytes.

The encode removes the folder once the output is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ValidationError

from wrapcodec import __version__
from wrapcodec.container import Segment
from wrapcodec.encode.config import EncodeConfig
from wrapcodec.encode.report import SegmentReport
from wrapcodec.encode.segments import SegmentDone
from wrapcodec.errors import InputError
from wrapcodec.paths import sha256_file

FORMAT = 2
"""Of the work folder's files; a folder of another format is not resumed."""


class _Manifest(BaseModel):
    format: int
    encode: str  # the hash of the source, the settings and the segments


class _Stored(BaseModel):
    """``k.json``: a segment's record without its bytes, and its report."""

    option: int
    first_frame: int
    frame_count: int
    bottleneck_width: int
    bottleneck_height: int
    inherit: bool
    prior: int
    bottleneck_bitdepth: int | None  # None: the encode's (format 2 on)
    payload_bytes: int
    payload_sha256: str
    update_bytes: int
    update_sha256: str
    encodes: int
    adapt_s: float
    probe_s: float
    report: SegmentReport


def folder_for(output: str) -> Path:
    """The work folder of an encode to ``output``."""
    return Path(f"{output}.parts")


def encode_key(config: EncodeConfig, source: Path, ranges: Sequence[tuple[int, int]]) -> str:
    """What identifies an encode's output: the source's bytes, the settings that change the
    output and the segments."""
    bank = config.bank
    settings = {
        "version": __version__,
        "codec": config.backend.name,
        "settings": config.settings.model_dump(mode="json", exclude={"threads"}),
        "options": [int(o.code) for o in config.options],
        "bitrate_kbps": config.bitrate_kbps,
        "bank": bank.id_for(bank.integer).hex() if bank is not None else None,
        "adaptation": repr(config.adaptation),
        "budget": repr(config.budget),
        "effort": config.effort,
        "pre_arithmetic": config.pre_arithmetic,
        "bitdepths": list(config.bitdepths),
        "lambda": config.lam,
        "lambda_scale": config.backend.slope_scale,
        "chains": config.chains,
        "source": sha256_file(source),
        "ranges": [list(r) for r in ranges],
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


class Parts:
    """The work folder ``folder`` of the encode ``key`` (:func:`encode_key`)."""

    def __init__(self, folder: Path, key: str) -> None:
        """Open the folder, making it when there is none; a folder left by another encode (a
        different source or settings) is an :class:`InputError`."""
        self.folder = folder
        manifest = folder / "manifest.json"
        if folder.is_dir() and manifest.exists():
            try:
                found = _Manifest.model_validate_json(manifest.read_bytes())
            except (OSError, ValidationError):
                found = None
            if found is None or found != _Manifest(format=FORMAT, encode=key):
                raise InputError(
                    f"{folder} holds the work of another encode (another source, other "
                    "settings or another version); remove it to start afresh"
                )
            return
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} is in the way of the encode's work folder")
        try:
            folder.mkdir(exist_ok=True)
            _write(manifest, _Manifest(format=FORMAT, encode=key).model_dump_json().encode())
        except OSError as exc:
            raise InputError(f"cannot make the work folder {folder}: {exc.strerror}") from exc

    def load(self) -> dict[int, SegmentDone]:
        """The segments stored whole, by index."""
        done: dict[int, SegmentDone] = {}
        for path in sorted(self.folder.glob("*.json")):
            if path.stem.isdigit():
                stored = self._read(int(path.stem))
                if stored is not None:
                    done[stored.index] = stored
        return done

    def _read(self, index: int) -> SegmentDone | None:
        try:
            stored = _Stored.model_validate_json((self.folder / f"{index}.json").read_bytes())
            payload = (self.folder / f"{index}.payload").read_bytes()
            update = (self.folder / f"{index}.update").read_bytes()
        except (OSError, ValidationError):
            return None
        if (len(payload), _sha(payload), len(update), _sha(update)) != (
            stored.payload_bytes,
            stored.payload_sha256,
            stored.update_bytes,
            stored.update_sha256,
        ):
            return None
        segment = Segment(
            option=stored.option,
            first_frame=stored.first_frame,
            frame_count=stored.frame_count,
            bottleneck_width=stored.bottleneck_width,
            bottleneck_height=stored.bottleneck_height,
            payload=payload,
            update=update,
            inherit=stored.inherit,
            prior=stored.prior,
            bottleneck_bitdepth=stored.bottleneck_bitdepth,
        )
        return SegmentDone(
            index, segment, stored.report, stored.encodes, stored.adapt_s, stored.probe_s
        )

    def store(self, done: SegmentDone) -> None:
        """Keep ``done``, its JSON last."""
        s, k = done.segment, done.index
        stored = _Stored(
            option=s.option,
            first_frame=s.first_frame,
            frame_count=s.frame_count,
            bottleneck_width=s.bottleneck_width,
            bottleneck_height=s.bottleneck_height,
            inherit=s.inherit,
            prior=s.prior,
            bottleneck_bitdepth=s.bottleneck_bitdepth,
            payload_bytes=len(s.payload),
            payload_sha256=_sha(s.payload),
            update_bytes=len(s.update),
            update_sha256=_sha(s.update),
            encodes=done.encodes,
            adapt_s=done.adapt_s,
            probe_s=done.probe_s,
            report=done.report,
        )
        try:
            _write(self.folder / f"{k}.payload", s.payload)
            _write(self.folder / f"{k}.update", s.update)
            _write(self.folder / f"{k}.json", stored.model_dump_json().encode())
        except OSError as exc:
            raise InputError(f"cannot keep segment {k} in {self.folder}: {exc.strerror}") from exc

    def remove(self) -> None:
        """Remove the folder (the output is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> None:
    """``data`` into ``path`` by a temporary file renamed onto it, flushed to the disk first
    so that a power cut leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
