import pytest

from wrapcodec import ffmpeg
from wrapcodec.backend import EncodeSettings, backends, get_backend
from wrapcodec.errors import BackendError


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
    from dataclasses import replace

    fake = replace(get_backend("x265"), name="x266", codec_id=250, encoder="libx266")
    with pytest.raises(BackendError, match="has no encoder libx266"):
        ffmpeg.require(fake)


def test_bad_ffmpeg_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRAPCODEC_FFMPEG", "/nonexistent/ffmpeg")
    with pytest.raises(BackendError, match="WRAPCODEC_FFMPEG"):
        ffmpeg.ffmpeg_exe()
