"""Priors: a bank's post-processor for an operating point (codec and QP band), chosen by the
encoder for the QP it codes at, signalled in the segment (container version 3), and used by
the decoder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from banks import copy_bank
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from wrapcodec.bank import Bank, ModelCard, shipped_folder
from wrapcodec.cli import cli
from wrapcodec.container import read_wrp, write_wrp
from wrapcodec.errors import InputError
from wrapcodec.metrics import measure_files
from wrapcodec.options import OPTIONS
from wrapcodec.paths import sha256_file


def _add_prior(
    folder: Path,
    band: tuple[int, int],
    codecs: list[str] | None,
    bitdepths: list[int] | None = None,
    number: int = 1,
) -> ModelCard:
    """post-1's weights with every bias of the post-processor moved a little, as prior
    ``number``."""
    name = f"post-1-p{number}"
    tensors = load_file(str(folder / "post-1.safetensors"))
    moved = {k: v + 0.01 * number if k.endswith(".bias") else v for k, v in tensors.items()}
    save_file(moved, str(folder / f"{name}.safetensors"))
    card = ModelCard.model_validate_json((folder / "post-1.json").read_text())
    prior = card.model_copy(
        update={
            "name": name,
            "file": f"{name}.safetensors",
            "sha256": sha256_file(folder / f"{name}.safetensors"),
            "prior": number,
            "codecs": codecs,
            "qp_band": band,
            "bitdepths": bitdepths,
        }
    )
    (folder / f"{name}.json").write_text(prior.model_dump_json(indent=1))
    return prior


@pytest.fixture()
def bank_with_prior(tmp_path: Path) -> Path:
    folder = tmp_path / "bank"
    copy_bank(folder, priors=False)
    _add_prior(folder, (25, 35), ["x264"])
    return folder


def test_the_bank_picks_the_prior_for_the_operating_point(bank_with_prior: Path) -> None:
    bank = Bank(bank_with_prior)
    post, wrapper = OPTIONS[1], OPTIONS[5]
    assert bank.prior_for(post, "x264", 25, 10) == bank.prior_for(post, "x264", 35, 8) == 1
    assert bank.prior_for(post, "x264", 24, 10) == bank.prior_for(post, "x264", 36, 10) == 0
    assert bank.prior_for(post, "x265", 30, 10) == 0  # another codec
    assert bank.prior_for(wrapper, "x264", 30, 10) == 0  # another option
    assert bank.card(post, 1).name == "post-1-p1" and bank.card(post).name == "post-1"
    with pytest.raises(InputError, match="has no prior 7 for post-1/1"):
        bank.card(post, 7)
    # the prior counts in the bank id
    assert bank.id != Bank(shipped_folder()).id


def test_a_prior_for_one_bottleneck_depth_serves_only_it(tmp_path: Path) -> None:
    folder = tmp_path / "bank"
    copy_bank(folder, priors=False)
    _add_prior(folder, (22, 47), ["x264"], [8])
    bank, post = Bank(folder), OPTIONS[1]
    assert bank.prior_for(post, "x264", 30, 8) == 1
    assert bank.prior_for(post, "x264", 30, 10) == 0
    card = ModelCard.model_validate_json((shipped_folder() / "post-1.json").read_text())
    with pytest.raises(ValueError, match="bitdepths"):
        ModelCard.model_validate({**card.model_dump(), "bitdepths": [9]})


def test_the_narrowest_band_serves_then_the_lowest_number(tmp_path: Path) -> None:
    folder = tmp_path / "bank"
    copy_bank(folder, priors=False)
    _add_prior(folder, (22, 47), ["x265"], [8], number=1)
    _add_prior(folder, (22, 27), ["x265", "x264"], [8], number=2)
    _add_prior(folder, (22, 27), ["x265"], [8], number=3)
    bank, post = Bank(folder), OPTIONS[1]
    assert bank.prior_for(post, "x265", 22, 8) == 2  # narrower than 1; numbered before 3
    assert bank.prior_for(post, "x265", 28, 8) == 1
    assert bank.prior_for(post, "x264", 27, 8) == 2
    assert bank.prior_for(post, "x265", 22, 10) == 0


def test_the_shipped_bank_routes_each_operating_point_to_its_prior() -> None:
    bank, post = Bank(shipped_folder()), OPTIONS[1]
    routes = {
        ("x265", 22, 10): 1,
        ("x265", 47, 10): 2,
        ("x265", 32, 10): 0,
        ("svtav1", 32, 10): 3,
        ("x264", 32, 8): 4,
        ("x264", 32, 10): 0,
        ("x265", 22, 8): 5,
        ("x264", 27, 8): 5,
        ("x265", 42, 8): 6,
        ("x264", 47, 8): 6,
        ("x265", 32, 8): 7,
        ("x265", 37, 8): 7,
    }
    assert {point: bank.prior_for(post, *point) for point in routes} == routes


def test_a_prior_needs_a_default_model_and_is_post_only(tmp_path: Path) -> None:
    card = ModelCard.model_validate_json((shipped_folder() / "post-1.json").read_text())
    with pytest.raises(ValueError, match="a prior is a post-only model with a qp_band"):
        ModelCard.model_validate({**card.model_dump(), "prior": 1})
    with pytest.raises(ValueError, match="qp_band"):
        ModelCard.model_validate({**card.model_dump(), "prior": 1, "qp_band": (30, 20)})
    folder = tmp_path / "lonely"
    folder.mkdir()
    for name in ("post-1.safetensors", "post-1.json"):
        shutil.copy(shipped_folder() / name, folder)
    _add_prior(folder, (20, 30), None)
    (folder / "post-1.json").unlink()  # the prior stays without its option's default model
    with pytest.raises(InputError, match="prior 1 of option 1 has no default model"):
        Bank(folder)


def _encode(runner: CliRunner, src: Path, out: Path, bank: Path, qp: int) -> dict:
    args = ["encode", str(src), "-o", str(out), "--codec", "x264", "--qp", str(qp)]
    args += ["--options", "1", "--adapt-steps", "0", "--models", str(bank), "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_encode_signals_the_prior_and_decode_uses_it(
    runner: CliRunner,
    clip8: Path,
    bank_with_prior: Path,
    tmp_path: Path,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x264")
    torch.set_num_threads(1)
    inside, outside = tmp_path / "in.wrp", tmp_path / "out.wrp"
    report = _encode(runner, clip8, inside, bank_with_prior, 30)
    _encode(runner, clip8, outside, bank_with_prior, 40)
    header, segments = read_wrp(inside)
    assert header.version == 3 and [s.prior for s in segments] == [1]
    header_out, segments_out = read_wrp(outside)
    assert header_out.version == 2 and [s.prior for s in segments_out] == [0]

    decoded = tmp_path / "in.y4m"
    args = ["decode", str(inside), "-o", str(decoded), "--models", str(bank_with_prior)]
    assert runner.invoke(cli, args).exit_code == 0
    assert measure_files(str(clip8), str(decoded)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )
    # the same stream told to use the default model decodes to something else
    as_default = tmp_path / "default.wrp"
    write_wrp(as_default, header, [s.__class__(**{**s.__dict__, "prior": 0}) for s in segments])
    other = tmp_path / "default.y4m"
    args = ["decode", str(as_default), "-o", str(other), "--models", str(bank_with_prior)]
    assert runner.invoke(cli, args).exit_code == 0
    assert other.read_bytes() != decoded.read_bytes()


def test_a_prior_the_bank_lacks_is_refused_in_one_line(
    runner: CliRunner,
    clip8: Path,
    bank_with_prior: Path,
    tmp_path: Path,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x264")
    wrp = tmp_path / "in.wrp"
    _encode(runner, clip8, wrp, bank_with_prior, 30)
    header, segments = read_wrp(wrp)
    forged = tmp_path / "forged.wrp"
    write_wrp(forged, header, [s.__class__(**{**s.__dict__, "prior": 5}) for s in segments])
    out = tmp_path / "forged.y4m"
    result = runner.invoke(
        cli, ["decode", str(forged), "-o", str(out), "--models", str(bank_with_prior)]
    )
    assert result.exit_code != 0
    assert "segment 0 uses prior 5 of post-1/1, which the model bank in" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
