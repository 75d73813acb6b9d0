"""The files ``encode --standard`` writes: plain streams any player decodes, by suffix.

The output's suffix names the file format; each takes some codecs. A container is written by
ffmpeg's muxer while the encoder codes, never remuxed from an elementary stream afterwards
(an Annex B stream has no timestamps, and a muxer guessing them drops pictures). VVC is not
put into Matroska, whose VVC mapping loses pictures in the ffmpeg used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wrapcodec.errors import InputError

AV1 = ("svtav1", "aom")


@dataclass(frozen=True)
class StreamFormat:
    """One kind of output file: its suffixes, ffmpeg's muxer and demuxer for it, the codecs
    it takes, and the extra muxer arguments per codec (e.g. the ``hvc1`` tag Apple's players
    want for HEVC in MP4)."""

    name: str
    suffixes: tuple[str, ...]
    muxer: str
    demuxer: str
    codecs: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def muxer_args(self, codec: str) -> list[str]:
        """What ffmpeg is told after the codec's own arguments when writing ``codec``."""
        return [arg for name, args in self.extra if name == codec for arg in args]


FORMATS: tuple[StreamFormat, ...] = (
    StreamFormat(
        "MP4",
        (".mp4", ".m4v"),
        "mp4",
        "mov",
        ("x264", "x265", "vvenc", *AV1),
        (
            ("x265", ("-tag:v", "hvc1", "-movflags", "+faststart")),
            ("x264", ("-movflags", "+faststart")),
            ("vvenc", ("-movflags", "+faststart")),
            *((c, ("-movflags", "+faststart")) for c in AV1),
        ),
    ),
    StreamFormat("Matroska", (".mkv",), "matroska", "matroska", ("x264", "x265", *AV1)),
    StreamFormat("WebM", (".webm",), "webm", "matroska", AV1),
    StreamFormat("IVF", (".ivf",), "ivf", "ivf", AV1),
    StreamFormat("raw H.264", (".264", ".h264"), "h264", "h264", ("x264",)),
    StreamFormat("raw HEVC", (".265", ".h265", ".hevc"), "hevc", "hevc", ("x265",)),
    StreamFormat("raw VVC", (".266", ".h266", ".vvc"), "vvc", "vvc", ("vvenc",)),
    StreamFormat("AV1 OBU", (".obu",), "obu", "obu", AV1),
)


def stream_format(path: str, codec: str) -> StreamFormat:
    """The format of an output file named ``path`` holding ``codec``; an :class:`InputError`
    (one line) for a suffix that is not a standard stream or a codec the format cannot hold."""
    suffix = Path(path).suffix.lower()
    for fmt in FORMATS:
        if suffix in fmt.suffixes:
            if codec not in fmt.codecs:
                takes = ", ".join(fmt.codecs)
                raise InputError(
                    f"{path}: a {fmt.name} file cannot hold {codec} here (it takes {takes})"
                )
            return fmt
    known = " ".join(s for fmt in FORMATS if codec in fmt.codecs for s in fmt.suffixes)
    raise InputError(
        f"{path}: --standard writes a file a plain player decodes; name it by its format "
        f"(for {codec}: {known})"
    )
