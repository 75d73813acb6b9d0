from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from wrapcodec import ffmpeg
from wrapcodec.backend import EncodeSettings, backends, get_backend
from wrapcodec.errors import BackendError
from wrapcodec.y4m import iter_frames, read_info


def test_builtins_register_through_entry_points() -> None:
    found = backends()
    builtins = ("x264", "x265", "vvenc", "svtav1", "aom")
    assert set(builtins) <= set(found)
    assert {found[n].codec_id for n in builtins} == {1, 2, 3, 4, 5}


def test_unknown_backend() -> None:
    with pytest.raises(BackendError, match="unknown codec backend 'av2'"):
        get_backend("av2")


def test_x265_uses_constant_qp_not_crf() -> None:
    b = get_backend("x265")
    args = ffmpeg.encode_args(
        "ffmpeg", b, EncodeSettings(qp=37, preset="fast"), 64, 48, "25/1", "o"
    )
    assert "-crf" not in args
    i = args.index("-x265-params")
    assert args[i + 1].split(":")[0] == "qp=37"
    assert args[args.index("-vcodec") + 1] == "libx265"
    assert args[args.index("-pix_fmt") + 1] == "yuv420p10le"
    assert args[args.index("-f", args.index("-i")) + 1] == "hevc"  # raw Annex B, no Matroska
    assert args[-1] == "o"


def test_x265_and_x264_are_tuned_for_psnr() -> None:
    for name in ("x265", "x264"):
        args = get_backend(name).codec_args(32, "medium", None)
        assert args[args.index("-tune") + 1] == "psnr", name


@pytest.mark.parametrize(
    ("name", "flag", "psy_off"),
    [("x265", "-x265-params", "qp={qp}:psy-rd=0:psy-rdoq=0"), ("x264", "-x264-params", "psy=0")],
)
def test_psnr_tuning_is_psycho_visual_optimisation_off(
    name: str, flag: str, psy_off: str, parkjoy: Path, tmp_path: Path
) -> None:
    """What ``-tune psnr`` does to a constant-QP encode: the stream of the codec's defaults
    with its psycho-visual optimisation switched off, byte for byte, and not the defaults."""
    backend = get_backend(name)
    frames = list(iter_frames(parkjoy))
    info = read_info(parkjoy)

    def coded(codec_args: Callable[[int, str, int | None], list[str]], tag: str) -> bytes:
        out = tmp_path / f"{tag}{backend.extension}"
        b = replace(backend, codec_args=codec_args)
        settings = EncodeSettings(qp=37, preset="medium", bitdepth=8)
        ffmpeg.encode(b, settings, frames, info.width, info.height, "25", out)
        return out.read_bytes()

    def untuned(qp: int, preset: str, threads: int | None, off: bool = False) -> list[str]:
        if name == "x265":
            params = psy_off.format(qp=qp) if off else f"qp={qp}"
            return ["-preset", preset, flag, f"{params}:log-level=warning"]
        return ["-preset", preset, "-qp", str(qp), *([flag, psy_off] if off else [])]

    tuned = coded(backend.codec_args, "tuned")
    assert tuned == coded(lambda q, p, t: untuned(q, p, t, off=True), "psy-off")
    assert tuned != coded(untuned, "defaults")


def test_vvenc_switches_qp_adaptation_off_and_codes_10_bit_only() -> None:
    b = get_backend("vvenc")
    args = ffmpeg.encode_args(
        "ffmpeg", b, EncodeSettings(qp=32, preset="faster"), 64, 64, "25", "o"
    )
    assert args[args.index("-qp") + 1] == "32"
    assert args[args.index("-qpa") + 1] == "0"
    with pytest.raises(BackendError, match="10-bit only"):
        b.validate(EncodeSettings(qp=32, preset="faster", bitdepth=8))


def test_x264_args_and_8_bit() -> None:
    b = get_backend("x264")
    args = ffmpeg.encode_args(
        "ffmpeg", b, EncodeSettings(qp=30, preset="slow", bitdepth=8), 64, 48, "25", "o"
    )
    assert args[args.index("-qp") + 1] == "30"
    assert args[args.index("-pix_fmt") + 1] == "yuv420p"
    # x264's 10-bit QP scale is offset by 12: same step size as QP 30 at 8 bits
    ten = ffmpeg.encode_args("ffmpeg", b, EncodeSettings(qp=30, preset="slow"), 64, 48, "25", "o")
    assert ten[ten.index("-qp") + 1] == "42"


def test_decode_args_write_y4m() -> None:
    args = ffmpeg.decode_args("ffmpeg", get_backend("vvenc"), "s.266", 10)
    assert args[args.index("-f") + 1] == "vvc"
    assert args[args.index("-vcodec") + 1] == "vvc"
    assert "yuv4mpegpipe" in args and args[-1] == "pipe:"


def test_validate() -> None:
    b = get_backend("x265")
    with pytest.raises(BackendError, match=r"QP 60 outside 0\.\.51"):
        b.validate(EncodeSettings(qp=60, preset="medium"))
    with pytest.raises(BackendError, match="unknown preset 'turbo'"):
        b.validate(EncodeSettings(qp=30, preset="turbo"))


def test_lambda_and_coded_size() -> None:
    assert get_backend("x265").qp_to_lambda(12) == pytest.approx(0.57)
    assert get_backend("x264").qp_to_lambda(15) == pytest.approx(1.7)
    assert get_backend("x265").coded_size(161, 97) == (162, 98)
    assert get_backend("vvenc").coded_size(40, 80) == (64, 80)


def test_bundled_ffmpeg_runs_all_builtins() -> None:
    for name in ("x264", "x265", "vvenc"):
        assert ffmpeg.missing(get_backend(name)) == [], name


def test_missing_encoder_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = replace(get_backend("x265"), name="x266", codec_id=250, encoder="libx266")
    with pytest.raises(BackendError, match="has no encoder libx266"):
        ffmpeg.require(fake)


def test_bad_ffmpeg_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRAPCODEC_FFMPEG", "/nonexistent/ffmpeg")
    with pytest.raises(BackendError, match="WRAPCODEC_FFMPEG"):
        ffmpeg.ffmpeg_exe()
