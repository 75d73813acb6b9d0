"""The shipped model bank and the neural options end to end (real codecs, real weights)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_errors import fails
from click.testing import CliRunner

from wrapcodec.backend import get_backend
from wrapcodec.bank import Bank, get_bank, sha256_file
from wrapcodec.cards import install
from wrapcodec.cli import cli
from wrapcodec.errors import InputError
from wrapcodec.metrics import measure_files
from wrapcodec.nets import count_macs, count_params
from wrapcodec.options import OPTIONS

NEURAL = [c for c, o in OPTIONS.items() if o.neural]


@pytest.fixture(scope="module")
def bank() -> Bank:
    return get_bank()


def test_every_neural_option_ships(bank: Bank) -> None:
    assert sorted(bank.cards) == NEURAL
    assert bank.id != bytes(8)
    # every shipped post-processor runs in the integer arithmetic, whose id differs
    assert bank.integer and bank.id_for(True) not in (bank.id, bytes(8))


@pytest.mark.slow  # counts every shipped network's operations at 1080p
def test_cards_match_weights_and_budgets(bank: Bank) -> None:
    for code, card in bank.cards.items():
        assert sha256_file(bank.folder / card.file) == card.sha256
        nets = bank.processors(OPTIONS[code])
        assert card.params == count_params(nets.post) <= 8200
        assert card.macs_per_pixel == pytest.approx(count_macs(nets.post, 1920, 1080), abs=0.1)
        assert card.macs_per_pixel <= 516
        assert (nets.pre is not None) == (card.kind == "wrapper")
        stages = [stage["config"] for stage in card.training]
        proxies = [s["proxy"] for s in stages]  # type: ignore[index]
        # then fine-tuned on the real codec: in the loop, or on the pairs it coded
        assert proxies[0] == "jpeg" and proxies[-1] in ("codec", "pairs"), card.name
        # a wrapper starts from the post-only model of its ratio, then trains as a wrapper
        kinds = [s["kind"] for s in stages]  # type: ignore[index]
        first = kinds.index(card.kind)
        assert set(kinds[:first]) <= {"post"} and set(kinds[first:]) == {card.kind}
        # pairs train a wrapper's post-processor only, behind the pre they were coded through
        on_pairs = [s for s in stages if s["proxy"] == "pairs"]  # type: ignore[index]
        assert all(s["kind"] == "post" or s["freeze_pre"] for s in on_pairs)  # type: ignore[index]
        assert card.validation is not None and card.validation.curves


def test_priors_match_weights_and_budgets(bank: Bank) -> None:
    assert bank.priors, "the shipped bank has priors"
    for (code, prior), card in bank.priors.items():
        assert sha256_file(bank.folder / card.file) == card.sha256
        nets = bank.processors(OPTIONS[code], prior)
        assert card.kind == "post" and nets.pre is None and card.qp_band is not None
        assert card.params == count_params(nets.post) <= 8200
        assert card.macs_per_pixel == pytest.approx(count_macs(nets.post, 1920, 1080), abs=0.1)
        assert card.macs_per_pixel <= 516
        assert card.training[-1]["config"]["proxy"] == "pairs"  # type: ignore[index]


def test_models_json(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    posts = [r for r in rows if r["kind"] != "prefilter"]  # pre-filters: encoder side only
    assert [r["option"] for r in posts if "prior" not in r] == NEURAL
    assert all(r["option"] == 1 and r["qp_band"] for r in posts if "prior" in r)
    for r in rows:
        assert {"name", "kind", "ratio", "macs_per_pixel", "params", "sha256"} <= set(r)
        assert r["macs_per_pixel"] <= 516 and r["params"] <= 8200


def _copy_bank(bank: Bank, dest: Path) -> Path:
    shutil.copytree(bank.folder, dest, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dest


def test_tampered_weights_are_refused(bank: Bank, tmp_path: Path) -> None:
    folder = _copy_bank(bank, tmp_path / "bank")
    weights = folder / bank.cards[6].file
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match its card"):
        Bank(folder).processors(OPTIONS[6])


def _encode(runner: CliRunner, src: Path, out: Path, options: str, *extra: str) -> dict:
    if "--adapt-steps" not in extra:
        extra = (*extra, "--adapt-steps", "0")
    args = ["encode", str(src), "-o", str(out), "--codec", "x265", "--qp", "32", "--json"]
    result = runner.invoke(cli, [*args, "--preset", "ultrafast", "--options", options, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("code", [2, 7])
def test_decoder_output_is_what_the_encoder_measured(
    runner: CliRunner,
    tmp_path: Path,
    clip8: Path,
    bank: Bank,
    code: int,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x265")
    wrp = tmp_path / "n.wrp"
    report = _encode(runner, clip8, wrp, str(code))
    assert report["option"] == code
    info = runner.invoke(cli, ["info", str(wrp), "--json"])
    described = json.loads(info.stdout)
    assert described["model_bank_id"] == bank.id_for(True).hex()
    assert described["arithmetic"] == "integer, version 1"
    first, second = tmp_path / "a.y4m", tmp_path / "b.y4m"
    for out in (first, second):
        result = runner.invoke(cli, ["decode", str(wrp), "-o", str(out)])
        assert result.exit_code == 0, result.output
    assert first.read_bytes() == second.read_bytes()  # deterministic on CPU
    assert measure_files(str(clip8), str(first)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )


def test_decode_refuses_other_weights(
    runner: CliRunner,
    tmp_path: Path,
    clip8: Path,
    bank: Bank,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x265")
    wrp = tmp_path / "n.wrp"
    _encode(runner, clip8, wrp, "6")
    other = _copy_bank(bank, tmp_path / "other")
    card_path = other / f"{bank.cards[6].name}.json"
    card = json.loads(card_path.read_text())
    weights = other / card["file"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    card["sha256"] = sha256_file(weights)
    card_path.write_text(json.dumps(card))
    other_id = Bank(other).id_for(True).hex()
    result = runner.invoke(
        cli, ["decode", str(wrp), "-o", str(tmp_path / "o.y4m"), "--models", str(other)]
    )
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert bank.id_for(True).hex() in line and other_id in line
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.y4m").exists()


def test_odd_size_10bit_source(
    runner: CliRunner, tmp_path: Path, clip10_odd: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    for code in (1, 5, 3, 8):
        wrp = tmp_path / f"o{code}.wrp"
        report = _encode(runner, clip10_odd, wrp, str(code))
        out = tmp_path / f"o{code}.y4m"
        assert runner.invoke(cli, ["decode", str(wrp), "-o", str(out)]).exit_code == 0
        assert measure_files(str(clip10_odd), str(out)).psnr_yuv == pytest.approx(
            report["psnr_yuv"], abs=1e-9
        )


def test_rdo_considers_every_option(
    runner: CliRunner, tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    report = _encode(runner, clip8, tmp_path / "all.wrp", "all")
    assert [c["code"] for c in report["candidates"]] == list(range(15))


def test_bench_neural_rows(
    runner: CliRunner, tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(clip8, data / "pj.y4m")
    out = tmp_path / "bench"
    args = ["bench", str(data), "--codec", "x265", "--preset", "ultrafast", "--qps", "32,42"]
    result = runner.invoke(cli, [*args, "--options", "2,6,9", "--frames", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert {"post-only", "wrapper", "post + wrapper"} <= set(results["bd_rate"])
    assert [r["option"] for r in results["post_gain"]] == [2, 6]
    neural = [p for p in results["points"] if p["kind"] in ("post", "wrapper")]
    assert neural and all(p["spec"]["model_hash"] for p in neural)
    assert all(p["psnr_yuv_lanczos_post"] is not None for p in neural)
    assert all(0.3 < p["post_kmacs_per_pixel"] < 0.6 for p in neural)
    assert "same bitstream" in (out / "report.md").read_text()
    bank = get_bank()
    assert results["versions"]["models"] == (
        f"{bank.folder} (bank {bank.id_for(True).hex()}, integer arithmetic)"
    )


def test_models_speed(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["models", "speed", "--size", "96x64", "--frames", "1"])
    assert result.exit_code == 0, result.output
    assert "post 96x64" in result.stdout and "wrapper-1_2" in result.stdout
    bad = runner.invoke(cli, ["models", "speed", "--size", "96by64"])
    assert bad.exit_code == 1 and "expected WIDTHxHEIGHT" in bad.stderr


@pytest.mark.parametrize("codec", ["x265", "svtav1"])
def test_models_install_writes_a_validated_card(
    runner: CliRunner, tmp_path: Path, require_backend: Callable[[str], None], codec: str
) -> None:
    """Validated with the codec asked for, at its default preset (SVT-AV1 has no 'medium')."""
    require_backend(codec)
    images = Path(__file__).parent / "data" / "images"
    weights = tmp_path / "run" / "p.safetensors"
    args = ["train", "--kind", "post", "--ratio", "1/2", "--data", str(images), "--steps", "2"]
    result = runner.invoke(cli, [*args, "--batch", "2", "--crop", "64", "--out", str(weights)])
    assert result.exit_code == 0, result.output
    dest = tmp_path / "bank"
    install = ["models", "install", str(weights), "--dest", str(dest), "--val", str(images)]
    fails(runner, [*install, "--codec", "nosuch"], "nosuch")
    assert not dest.exists()  # refused before anything was written
    result = runner.invoke(cli, [*install, "--codec", codec])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dest.iterdir()) == ["post-1_2.json", "post-1_2.safetensors"]
    card = Bank(dest).cards[2]
    assert card.sha256 == sha256_file(dest / card.file)
    assert card.validation is not None and card.validation.codec == codec
    assert card.validation.preset == get_backend(codec).default_preset
    assert set(card.validation.curves) == {"post-1/2", "lanczos-1/2", "bilinear-1/2"}
    assert all(len(c) == 6 for c in card.validation.curves.values())
    listed = runner.invoke(cli, ["models", "--json", "--models", str(dest)])
    assert [r["name"] for r in json.loads(listed.stdout)] == ["post-1_2"]


@pytest.mark.slow  # trains twice
def test_a_run_from_a_bank_model_keeps_its_cards_stages(runner: CliRunner, tmp_path: Path) -> None:
    """Fine-tuning a bank's model (``--init`` its weights, which have a card but no
    ``.train.json``): the new card lists the card's stages, then the new run's."""
    images = Path(__file__).parent / "data" / "images"
    common = ["train", "--kind", "post", "--ratio", "1/2", "--data", str(images), "--batch", "2"]

    def train(out: Path, *extra: str) -> None:
        result = runner.invoke(cli, [*common, "--crop", "64", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output

    train(tmp_path / "a" / "a.safetensors", "--steps", "1")
    first = install(tmp_path / "a" / "a.safetensors", tmp_path / "bank")
    shipped = tmp_path / "bank" / first.file
    train(tmp_path / "b" / "b.safetensors", "--steps", "2", "--init", str(shipped))
    card = install(tmp_path / "b" / "b.safetensors", tmp_path / "bank2")
    assert len(first.training) == 1 and card.training[:1] == first.training
    assert [s["steps"] for s in card.training] == [1, 2]
    assert card.training[1]["config"]["init"] == str(shipped)  # type: ignore[index]

    data = shipped.read_bytes()
    shipped.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # no longer the card's weights
    with pytest.raises(InputError, match=r"post-1_2\.train\.json: missing"):
        install(tmp_path / "b" / "b.safetensors", tmp_path / "bank3")
