"""Command-line interface: thin click commands over the library; rich lives only here."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NoReturn

import click
import torch
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from wrapcodec import __version__, ffmpeg, interrupt
from wrapcodec.adapt import AdaptConfig, check_steps
from wrapcodec.backend import backends, get_backend
from wrapcodec.bank import (
    Bank,
    PreFilterCard,
    bank_folder,
    get_bank,
    load_prefilter,
    prefilter_card,
    prefilter_cards,
)
from wrapcodec.bench import analysis as bench_analysis
from wrapcodec.bench import effort as bench_effort_lib
from wrapcodec.bench import plan as bench_plan
from wrapcodec.bench import report as bench_report
from wrapcodec.bench import run as bench_run
from wrapcodec.bench.analysis import BenchResults
from wrapcodec.bench.standard import report_md, run_standard_bench
from wrapcodec.decoder import decode_file, file_info
from wrapcodec.encode import EncodeConfig, EncodeReport, encode_file
from wrapcodec.encode.config import adaptation_for, settings_for
from wrapcodec.encode.efforts import DEFAULT_EFFORT, EFFORTS, AdaptBudget, parse_budget
from wrapcodec.encode.report import AdaptationReport, CandidateReport
from wrapcodec.encode.standard import (
    Metric,
    StandardConfig,
    StandardReport,
    encode_standard,
    parse_standard_options,
)
from wrapcodec.errors import InputError, WrapcodecError
from wrapcodec.metrics import measure_files
from wrapcodec.nets import PRE_ARITHMETICS, default_pre_arithmetic
from wrapcodec.options import parse_options, parse_qps
from wrapcodec.pairs import QPS
from wrapcodec.paths import STDIO, check_input, check_output, display_name
from wrapcodec.prefilter import PreFilter
from wrapcodec.streams import stream_format

err_console = Console(stderr=True)
DEMO_CLIP = "parkjoy_480x270_10f.y4m"


class _Group(click.Group):
    """Turns library errors into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (wrapcodec.interrupt)
            _interrupted(ctx, exc)
        except WrapcodecError as exc:
            # After a signal, an error is its consequence (the handler killed an ffmpeg whose
            # output was being read): the signal is what ended the command.
            signalled = interrupt.received()
            if signalled is not None:
                _interrupted(ctx, signalled)
            raise click.ClickException(str(exc)) from None
        except ValidationError as exc:
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise click.ClickException(fields) from None
        finally:
            # The command is over: a signal from now on is reported when the program exits.
            interrupt.hold()


def _interrupted(ctx: click.Context, exc: KeyboardInterrupt) -> NoReturn:
    interrupt.hold()
    click.echo(interrupt.message(exc), err=True)
    ctx.exit(interrupt.exit_status(exc))


class _Bar:
    """Rich progress bar on stderr implementing the library's ProgressSink."""

    def __init__(self, progress: Progress, what: str) -> None:
        self.progress = progress
        self.task = progress.add_task(what, total=None)

    def start(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def advance(self, label: str) -> None:
        self.progress.update(self.task, advance=1, description=label)


class _SegmentBars(_Bar):
    """:class:`_Bar` over all the work, and a bar for each segment being coded."""

    def __init__(self, progress: Progress, what: str) -> None:
        super().__init__(progress, what)
        self.segments: dict[int, TaskID] = {}

    def begin_segment(self, index: int, label: str, total: int) -> None:
        self.segments[index] = self.progress.add_task(f"  {label}", total=total)

    def advance_segment(self, index: int) -> None:
        if index in self.segments:
            self.progress.update(self.segments[index], advance=1)

    def end_segment(self, index: int) -> None:
        task = self.segments.pop(index, None)
        if task is not None:
            self.progress.remove_task(task)


def _progress(enabled: bool) -> Progress:
    """The progress bar of encodes and benches on stderr, with an estimate of the time left
    (from the pace so far: the work items are not all alike)."""
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not enabled,
        transient=True,
    )


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="wrapcodec")
@click.option("-v", "--verbose", is_flag=True, help="Log what the library does.")
def cli(verbose: bool) -> None:
    """Wrap standard video codecs in switchable pre- and post-processors."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


def _update_cell(a: AdaptationReport | None) -> tuple[str, str]:
    """The adaptation columns: its gain in dB, and what the decoder gets (bytes sent, the
    previous segment's update, or nothing)."""
    if a is None:
        return "", ""
    rung = f" {a.rung}{' Δ' if a.relative else ''}" if a.rung else ""
    sent = f"{a.bytes} B{rung}" if a.used else "inherited" if a.inherited else "—"
    return f"{a.gain_db:+.2f}", sent


def _rungs_line(name: str, a: AdaptationReport) -> str:
    """The updates fitted for one candidate: rung (Δ: relative), steps, bytes and J,
    inheriting the update in force at no bytes, where there was one to inherit, and the J
    out of its reach where the climb stopped for it."""
    tried = [
        f"{t.rung}{' Δ' if t.relative else ''} {t.steps} steps {t.bytes} B J {t.cost:.3f}"
        + _judged(t.judged_on)
        for t in a.tried
    ]
    if a.cost_inherited is not None:
        tried.append(f"inheriting J {a.cost_inherited:.3f}" + _judged(a.inherited_judged_on))
    if a.out_of_reach and a.bar is not None:
        tried.append(f"stopped: J {a.bar:.3f} out of reach")
    return f"[dim]updates tried for {name}: {'; '.join(tried)}[/dim]"


def _judged(frames: int | None) -> str:
    return f" ({frames} frames)" if frames is not None else ""


@dataclass
class _Column:
    """A table column: its header, its cells (one per row), and whether it is shown however
    narrow the terminal."""

    header: str
    cells: list[str]
    right: bool = True
    required: bool = False

    @property
    def width(self) -> int:
        return max([len(self.header), *map(len, self.cells)])


def _fitted_table(
    columns: list[_Column], width: int, styles: list[str | None] | None = None, **table: Any
) -> tuple[Table, int]:
    """A table of the required columns and, in their order, the others up to the first that
    does not fit in ``width`` characters, no cell cut or wrapped; and how many columns were
    left out."""
    used = 1 + sum(c.width + 3 for c in columns if c.required)  # a rule and two spaces each
    shown = []
    fits = True
    for column in columns:
        if not column.required:
            fits = fits and used + column.width + 3 <= width
            if not fits:
                continue
            used += column.width + 3
        shown.append(column)
    out = Table(**table)
    for column in shown:
        out.add_column(column.header, justify="right" if column.right else "left", no_wrap=True)
    rows = len(columns[0].cells) if columns else 0
    for i in range(rows):
        out.add_row(*(c.cells[i] for c in shown), style=(styles or [None] * rows)[i])
    return out, len(columns) - len(shown)


def _more(count: int, what: str) -> str:
    return f"{count} more {what}{'s' if count > 1 else ''}"


def _candidate_table(report: EncodeReport, width: int) -> Table:
    """The candidates, a line each with the option's full name; columns beyond option, QP,
    kbps, PSNR-YUV and J as far as ``width`` allows (``--json`` has every field)."""
    rows = report.candidates
    coded = [c.qp is not None for c in rows]

    def cells(value: Callable[[CandidateReport], str]) -> list[str]:
        return [value(c) if ok else "" for c, ok in zip(rows, coded, strict=True)]

    def cost(c: CandidateReport) -> str:
        if c.qp is not None:
            return f"{c.cost:.3f}"
        if c.estimate is None:  # skipped
            return ""
        return ("≥" if c.estimate.method == "bound" else "~") + f"{c.estimate.cost:.3f}"

    updates = [_update_cell(c.adaptation) for c in rows]
    columns = [
        _Column("option", [("▶ " if c.chosen else "  ") + c.name for c in rows], False, True),
        _Column("QP", cells(lambda c: str(c.qp)), required=True),
        _Column("kbps", cells(lambda c: f"{c.kbps:.1f}"), required=True),
        _Column("PSNR-YUV", cells(lambda c: f"{c.psnr_yuv:.3f}"), required=True),
        _Column("J", [cost(c) for c in rows], required=True),
        _Column("adapt dB", [u[0] for u in updates]),
        _Column("update", [u[1] for u in updates]),
        _Column("PSNR-Y", cells(lambda c: f"{c.psnr_y:.3f}")),
        _Column("enc s", cells(lambda c: f"{c.encode_s:.1f}")),
        _Column("size", [c.bottleneck for c in rows]),
        _Column("code", [str(c.code) for c in rows]),
    ]
    styles = [
        "bold" if c.chosen else None if ok else "dim" for c, ok in zip(rows, coded, strict=True)
    ]
    title = f"{report.codec} QP {report.qp}" if report.qp is not None else None
    table, left_out = _fitted_table(columns, width, styles, title=title)
    if left_out:
        table.caption = f"{_more(left_out, 'column')} on a wider terminal; --json has every field"
    return table


_NOT_STANDARD = {
    "bitrate": "--bitrate",
    "bitdepth": "--bitdepth",
    "segment_frames": "--segment-frames",
    "jobs": "--jobs",
    "dask": "--dask",
    "resume": "--resume",
    "adapt_steps": "--adapt-steps",
    "adapt_budget": "--adapt-budget",
    "pre_arithmetic": "--pre-arithmetic",
    "lam": "--lambda",
}


def _refuse_with_standard(ctx: click.Context) -> None:
    """One line for an option that means nothing to a standard stream."""
    for name, flag in _NOT_STANDARD.items():
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise InputError(f"{flag} does not apply to --standard")


def _encode_standard(
    input: str,
    output: str,
    codec: str,
    qp: int,
    preset: str | None,
    options: str,
    metric: Metric,
    models: str | None,
    overwrite: bool,
    as_json: bool,
) -> StandardReport:
    backend = get_backend(codec)
    candidates = parse_standard_options(options)
    stream_format(output, backend.name)
    check_input(input)
    check_output(output, overwrite, source=input)
    folder = bank_folder(models)
    card = prefilter_card(folder, backend.name, metric)
    net = load_prefilter(folder, card) if card is not None and "prefilter" in candidates else None
    backend.check_qp(qp)
    cfg = StandardConfig(
        backend,
        qp,
        preset or backend.default_preset,
        metric,
        candidates,
        net,
        card.name if card else None,
    )
    with _progress(not as_json and sys.stderr.isatty()) as progress:
        task = progress.add_task("coding", total=len(candidates))

        def step(name: str) -> None:
            progress.update(task, description=f"coding {name}", advance=0)

        report = encode_standard(input, output, cfg, step)
        progress.update(task, completed=len(candidates))
    return report


def _print_standard(report: StandardReport, as_json: bool) -> None:
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    console = Console()
    table = Table(title=f"{report.codec} QP {report.qp}, {report.metric}, λ {report.lam:.2f}")
    for column in ("candidate", "kbps", "PSNR-YUV", "MS-SSIM dB", "J", ""):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for c in report.candidates:
        ms = "–" if c.ms_ssim_db is None else f"{c.ms_ssim_db:.3f}"
        mark = "chosen" if c.name == report.chosen else ""
        table.add_row(c.name, f"{c.kbps:.1f}", f"{c.psnr_yuv:.3f}", ms, f"{c.cost:.3f}", mark)
    console.print(table)
    if report.note:
        console.print(f"[dim]{report.note}[/dim]")
    chosen = next(c for c in report.candidates if c.name == report.chosen)
    console.print(
        f"chosen: {report.chosen} → {display_name(report.output, output=True)} "
        f"({report.format}, {chosen.bytes} bytes, {report.seconds:.1f} s)",
        highlight=False,
    )
    console.print(f"decoded MD5: {chosen.decoded_md5}", highlight=False)


def _depths_line(report: EncodeReport) -> str:
    """``--bitdepth auto``: the depth each segment was coded at, and direct coding's J at
    each depth tried."""
    parts = []
    for s in report.segments:
        costs = ", ".join(f"{d.cost:.4g} at {d.bitdepth}" for d in s.depths)
        probe = s.depths[0].frames if s.depths else None
        on = "" if probe is None else f" on {probe} frames"
        where = f"frame {s.first_frame}: " if len(report.segments) > 1 else ""
        parts.append(f"{where}{s.bitdepth} bits (direct J {costs}{on})")
    return "bottleneck bit depth: " + "; ".join(parts)


def _lambda_line(report: EncodeReport) -> str:
    """``--lambda measured``: each segment's λ and its scale over the codec's relation."""
    parts = []
    for s in report.segments:
        where = f"frame {s.first_frame}: " if len(report.segments) > 1 else ""
        if s.lam is None:
            parts.append(f"{where}the relation's")
        elif not s.lam.measured:
            no_slope = f"no slope to QP {s.lam.probe_qp}"
            parts.append(f"{where}{s.lam.lam:.4g}, the relation's ({no_slope})")
        else:
            parts.append(f"{where}{s.lam.lam:.4g} ({s.lam.scale:.2f} × the relation's)")
    return "λ: " + "; ".join(parts)


def _print_report(report: EncodeReport, as_json: bool) -> None:
    """The report on stdout, or on stderr when stdout carries the .wrp file (``-o -``)."""
    to_stderr = report.output == STDIO
    if as_json:
        click.echo(report.model_dump_json(indent=2), err=to_stderr)
        return
    console = Console(stderr=to_stderr)
    console.print(_candidate_table(report, console.width))
    for c in report.candidates:
        if c.skipped:
            console.print(f"[dim]skipped {c.name}: {c.skipped}[/dim]")
        if c.adaptation is not None and c.adaptation.tried:
            console.print(_rungs_line(c.name, c.adaptation))
    if report.effort != "exhaustive":
        pruned = sum(c.pruned is not None for s in report.segments for c in s.candidates)
        console.print(
            f"[dim]effort {report.effort}: {pruned} candidates ruled out by a bound or an "
            f"estimate (J ≥ bound, ~ estimate), {report.encodes} encodes; --json says how[/dim]"
        )
    if len(report.segments) > 1:
        choices = ", ".join(f"{s.first_frame}:{s.option_name}" for s in report.segments)
        how = " (cut at scene changes)" if report.segmentation == "scenes" else ""
        console.print(f"segments{how}: {choices}", highlight=False)
    if report.resumed:
        console.print(f"{report.resumed} of {len(report.segments)} segments taken up, not coded")
    if any(s.depths for s in report.segments):
        console.print(_depths_line(report), highlight=False)
    if any(s.lam is not None for s in report.segments):
        console.print(_lambda_line(report), highlight=False)
    console.print(
        f"chosen: option {report.option} ({report.option_name}), {report.kbps:.1f} kbps, "
        f"PSNR-YUV {report.psnr_yuv:.3f} dB, PSNR-Y {report.psnr_y:.3f} dB → "
        f"{display_name(report.output, output=True)} "
        f"({report.timings['total_s']:.1f} s)"
    )


def _encode(input: str, output: str, config: EncodeConfig, as_json: bool) -> EncodeReport:
    """``config``'s encode of ``input`` to ``output``, with a progress bar on a terminal."""
    with _progress(not as_json and sys.stderr.isatty()) as progress:
        return encode_file(input, output, config, _SegmentBars(progress, "encoding"))


class _SegmentFrames(click.ParamType):
    """``--segment-frames``: a count of frames (0 or more), or ``auto``."""

    name = "N|auto"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | Literal["auto"]:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            count = int(str(value))
        except ValueError:
            self.fail(f"{value!r} is neither a number of frames nor auto", param, ctx)
        if count < 0:
            self.fail(f"{count} is below 0", param, ctx)
        return count


_codec_opt = click.option(
    "--codec", default="x265", show_default=True, help="Codec backend (see `wrapcodec backends`)."
)
_preset_opt = click.option("--preset", default=None, help="Encoder preset [backend default].")


def _bitdepth_option(
    help: str, auto: bool = False, default: str | None = None
) -> Callable[[Callable[..., Any]], Any]:
    """``--bitdepth 8|10`` (default 10), or with ``auto`` ``auto|8|10`` (default auto, or
    ``default``)."""
    choices = ["auto", "8", "10"] if auto else ["8", "10"]
    return click.option(
        "--bitdepth",
        type=click.Choice(choices),
        default=default or ("auto" if auto else "10"),
        show_default=True,
        help=help,
    )


_bitdepth_opt = _bitdepth_option("Bit depth of the coded bottleneck.")
_options_opt = click.option(
    "--options",
    "options",
    default="all",
    show_default=True,
    help="Candidate options: codes or names, comma-separated (0,9,lanczos-2/3,...), "
    "`linear`, or `all`.",
)
_adapt_opt = click.option(
    "--adapt-steps",
    type=click.IntRange(min=0),
    default=AdaptConfig.steps,
    show_default=True,
    help="Fit each neural candidate's post-processor to the segment in N steps and send the "
    "update when it pays (0: the bank's models as they are).",
)
_effort_opt = click.option(
    "--effort",
    type=click.Choice(list(EFFORTS)),
    default=DEFAULT_EFFORT,
    show_default=True,
    help="How hard the option search works: "
    + "; ".join(f"{e.name}: {e.description}" for e in EFFORTS.values())
    + ".",
)
_pre_arithmetic_opt = click.option(
    "--pre-arithmetic",
    type=click.Choice(["auto", *PRE_ARITHMETICS]),
    default="auto",
    show_default=True,
    # resolved here, so commands, reports and cache keys see the arithmetic actually used
    callback=lambda _ctx, _param, value: default_pre_arithmetic() if value == "auto" else value,
    help="Arithmetic of the wrappers' pre-processors (encoder side only; the decoder's output "
    "does not depend on it): bfloat16 convolutions, 1.6-2.5x faster at 1080p where the CPU "
    "has them (AVX512-BF16, AMX), or float32, the reference [auto: bfloat16 where native].",
)


def _lambda_option(help: str) -> Callable[[Callable[..., Any]], Any]:
    """``--lambda model|measured`` (default model), into the parameter ``lam``."""
    return click.option(
        "--lambda",
        "lam",
        type=click.Choice(["model", "measured"]),
        default="model",
        show_default=True,
        help=help,
    )


_models_opt = click.option(
    "--models",
    default=None,
    metavar="DIR",
    help="Model bank folder (weights + cards) [the shipped models].",
)


@cli.command()
@click.argument("input", metavar="IN.y4m")
@click.option(
    "-o", "--output", required=True, metavar="OUT.wrp", help="Output .wrp file, `-` for stdout."
)
@_codec_opt
@click.option("--qp", type=int, help="Fixed QP of the codec.")
@click.option("--bitrate", type=float, metavar="KBPS", help="Rate budget instead of --qp.")
@_preset_opt
@_bitdepth_option(
    "Bit depth of the coded bottleneck; auto: per segment, the depth at which direct "
    "coding has the lower J (at --effort fast, measured on a probe of a segment of 64 frames "
    "or more; 10 under --bitrate).",
    auto=True,
)
@_options_opt
@click.option(
    "--segment-frames",
    type=_SegmentFrames(),
    default=None,
    metavar="N|auto",
    help="Choose the option (and fit the update) per segment of N frames; 0: one segment; "
    "auto: segments cut at scene changes, 1 to 6 s long [one segment up to 6 s, else auto].",
)
@_effort_opt
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Segments coded at once, on N processes, where scene changes make them independent; "
    "else candidates coded at once [segments one at a time; candidates one per core, at most "
    "4]. The output does not change.",
)
@click.option(
    "--dask",
    default=None,
    metavar="ADDRESS",
    help="Code the segments on the workers of this Dask scheduler; the output does not change.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep each segment coded in OUT.wrp.parts/ and take up those found there, so that a "
    "stopped encode restarted with the same settings finishes with the same bytes.",
)
@_pre_arithmetic_opt
@click.option(
    "--adapt-steps",
    type=click.IntRange(min=0),
    default=None,
    help="Fit each neural candidate coded in full to the segment in N steps and send the "
    "update when it pays (0: the bank's models as they are) [fast: 0, else "
    f"{AdaptConfig.steps}].",
)
@click.option(
    "--adapt-budget",
    default=None,
    metavar="Nx|Ns|none",
    help="Encode time content adaptation may spend per neural candidate and segment, over "
    "the update rungs it fits: N times a direct encode of the segment (a fixed model of "
    "frames x pixels, not a clock, so the bytes do not depend on the machine), N seconds "
    "(by a fixed model of a training step), or none [fast: no adaptation, medium: 3x, "
    "slow: 20x, exhaustive: none].",
)
@_lambda_option(
    "The price of a bit in J = D + λ·R: the codec's reference relation λ(QP) (an update's "
    "quantisation at λ times the codec's slope scale, `backends --json`), or measured per "
    "segment on direct coding's RD curve (one more direct encode, 3 QPs up)."
)
@click.option(
    "--standard",
    is_flag=True,
    help="Write a plain stream any player decodes (OUT.mp4, .mkv, .webm, .ivf or the codec's "
    "raw stream), choosing between direct coding and the bank's pre-filter by what a plain "
    "decoder shows; no post-processor.",
)
@click.option(
    "--metric",
    type=click.Choice(["psnr", "ms-ssim"]),
    default="psnr",
    show_default=True,
    help="With --standard: the quality the RDO (and the pre-filter) aims at.",
)
@click.option("-y", "overwrite", is_flag=True, help="Overwrite the output.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@_models_opt
@click.pass_context
def encode(
    ctx: click.Context,
    input: str,
    output: str,
    codec: str,
    qp: int | None,
    bitrate: float | None,
    preset: str | None,
    bitdepth: str,
    options: str,
    segment_frames: int | Literal["auto"] | None,
    effort: str,
    jobs: int | None,
    dask: str | None,
    resume: bool,
    pre_arithmetic: str,
    adapt_steps: int | None,
    adapt_budget: str | None,
    lam: Literal["model", "measured"],
    standard: bool,
    metric: Metric,
    overwrite: bool,
    as_json: bool,
    models: str | None,
) -> None:
    """Encode IN.y4m (`-` for stdin) with encoder-side RDO over the wrapper options.

    With `-o -` the .wrp file goes to stdout and the report (table or --json) to stderr.
    With --standard, OUT is a plain stream instead (docs/usage.md, "Standard streams")."""
    if (qp is None) == (bitrate is None):
        raise click.UsageError("give exactly one of --qp and --bitrate")
    if (
        not standard
        and ctx.get_parameter_source("metric") == click.core.ParameterSource.COMMANDLINE
    ):
        raise InputError("--metric applies to --standard streams only")
    if standard:
        _refuse_with_standard(ctx)
        assert qp is not None
        report = _encode_standard(
            input, output, codec, qp, preset, options, metric, models, overwrite, as_json
        )
        _print_standard(report, as_json)
        return
    backend = get_backend(codec)
    auto = bitdepth == "auto"
    depth = max(backend.bitdepths) if auto else int(bitdepth)
    settings = settings_for(backend, qp, preset, depth)
    adapt = adaptation_for(effort, adapt_steps)
    budget: AdaptBudget | Literal["effort"] | None = "effort"  # the effort level's
    if adapt_budget is not None:
        budget = parse_budget(adapt_budget)
    check_input(input)
    check_output(output, overwrite, source=input)
    bank = get_bank(models)
    config = EncodeConfig(
        backend=backend,
        settings=settings,
        options=tuple(parse_options(options, bank.has, bank.where)),
        bitrate_kbps=bitrate,
        segment_frames=segment_frames,
        bank=bank,
        adapt=adapt,
        adapt_budget=budget,
        effort=effort,
        jobs=jobs,
        dask=dask,
        resume=resume,
        pre_arithmetic=pre_arithmetic,
        auto_bitdepth=auto,
        lam=lam,
    )
    _print_report(_encode(input, output, config, as_json), as_json)


@cli.command()
@click.argument("input", metavar="IN.wrp")
@click.option("-o", "--output", required=True, metavar="OUT.y4m", help="`-` for stdout.")
@click.option("-y", "overwrite", is_flag=True, help="Overwrite the output.")
@_models_opt
def decode(input: str, output: str, overwrite: bool, models: str | None) -> None:
    """Decode IN.wrp and apply the signalled post-processor."""
    check_input(input)
    check_output(output, overwrite, source=input)
    header = decode_file(input, output, get_bank(models))
    if output != STDIO:
        err_console.print(f"{header.frame_count} frames → {output}")


@cli.command()
@click.argument("input", metavar="FILE.wrp")
@click.option("--json", "as_json", is_flag=True, help="Print the header as JSON.")
def info(input: str, as_json: bool) -> None:
    """Show the header of a .wrp file."""
    check_input(input)
    meta = file_info(input)
    if as_json:
        click.echo(meta.model_dump_json(indent=2))
        return
    for key, value in meta.model_dump(exclude={"segments"}).items():
        click.echo(f"{key:20} {value:.3f}" if isinstance(value, float) else f"{key:20} {value}")
    for s in meta.segments:
        click.echo(
            f"segment @{s.first_frame:<6} {s.frame_count} frames, option {s.option} "
            f"({s.option_name}), bottleneck {s.bottleneck} at {s.bottleneck_bitdepth} bits, "
            f"{s.payload_bytes} bytes"
            + (f" + post-processor update {s.update_bytes} bytes" if s.update_bytes else "")
            + (", post-processor update of the previous segment" if s.inherits_update else "")
        )


@cli.command(name="backends")
@click.option("--json", "as_json", is_flag=True)
def list_backends(as_json: bool) -> None:
    """List the codec backends and whether each works with this ffmpeg."""
    rows = [
        {
            "name": name,
            "codec_id": b.codec_id,
            "description": b.description,
            "encoder": b.encoder,
            "decoder": b.decoder,
            "bitdepths": list(b.bitdepths),
            "qp_range": list(b.qp_range),
            "usable": not (lacks := ffmpeg.missing(b)),
            "missing": lacks,
            "lambda": b.lambda_source,
            "lambda_scale": b.slope_scale,
            "rivals": [{"name": r.name, "description": r.description} for r in b.rivals],
        }
        for name, b in backends().items()
    ]
    if as_json:
        click.echo(json.dumps({"ffmpeg": ffmpeg.ffmpeg_exe(), "backends": rows}, indent=2))
        return
    console = Console()
    found = backends()
    usable = {name: _usable(ffmpeg.missing(b)) for name, b in found.items()}
    columns = [
        _Column("name", list(found), right=False, required=True),
        _Column("usable here", list(usable.values()), right=False, required=True),
        _Column("QP", [f"{b.qp_range[0]}..{b.qp_range[1]}" for b in found.values()]),
        _Column("bits", [",".join(map(str, b.bitdepths)) for b in found.values()]),
        _Column("encoder / decoder", [f"{b.encoder} / {b.decoder}" for b in found.values()], False),
        _Column("id", [str(b.codec_id) for b in found.values()]),
    ]
    title = f"ffmpeg {ffmpeg.capabilities().version}"
    console.print(_fitted_table(columns, console.width, title=title)[0])
    console.print(f"ffmpeg: {ffmpeg.ffmpeg_exe()}", soft_wrap=True)
    for name, b in found.items():
        console.print(f"[bold]{name}[/bold]: {b.description}")


def _usable(missing: Sequence[str]) -> str:
    return "yes" if not missing else "no: lacks " + ", ".join(missing)


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
@_models_opt
@click.pass_context
def models(ctx: click.Context, as_json: bool, models: str | None) -> None:
    """List the models of the bank: MACs per pixel, parameters, sha256, validation."""
    if ctx.invoked_subcommand is not None:
        return
    bank = get_bank(models)
    rows = [
        {
            "name": c.name,
            "kind": c.kind,
            "ratio": c.ratio,
            "option": c.option,
            "macs_per_pixel": c.macs_per_pixel,
            "params": c.params,
            "pre_macs_per_pixel": c.pre_macs_per_pixel,
            "pre_params": c.pre_params,
            "steps": sum(int(str(s["steps"])) for s in c.training),
            "sha256": c.sha256,
            "val_bd_rate": c.validation.bd_rate if c.validation else None,
        }
        | (
            {"prior": c.prior, "codecs": c.codecs, "qp_band": c.qp_band, "bitdepths": c.bitdepths}
            if c.prior
            else {}
        )
        for c in bank.all_cards()
    ]
    rows += [_prefilter_row(c) for c in prefilter_cards(bank.folder)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return

    def first_bd(r: dict[str, Any]) -> str:  # the card's first rival: direct or Lanczos
        bd = {k: v for k, v in (r["val_bd_rate"] or {}).items() if v is not None}
        return next((f"{v:+.2f} % vs {k}" for k, v in bd.items()), "-")

    columns = [
        _Column("code", [str(r["option"]) for r in rows], required=True),
        _Column("model", [str(r["name"]) for r in rows], right=False, required=True),
        _Column("val BD-rate", [first_bd(r) for r in rows], required=True),
        _Column("MAC/px", [f"{r['macs_per_pixel']:.1f}" for r in rows]),
        _Column("params", [str(r["params"]) for r in rows]),
        _Column(
            "pre MAC/px",
            [
                "-" if r["pre_macs_per_pixel"] is None else f"{r['pre_macs_per_pixel']:.0f}"
                for r in rows
            ],
        ),
        _Column("steps", [str(r["steps"]) for r in rows]),
    ]
    console = Console()
    table, left_out = _fitted_table(
        columns, console.width, title=f"model bank {bank.id.hex()}: {bank.folder}"
    )
    table.caption = "val BD-rate: against the first rival of the card; --json has them all"
    if left_out:
        table.caption += f"; {_more(left_out, 'column')} on a wider terminal"
    console.print(table)


def _prefilter_row(card: PreFilterCard) -> dict[str, Any]:
    """A pre-filter in ``wrapcodec models``: encoder-side only, so nothing at the decoder."""
    net = PreFilter(card.width, card.layers)
    val = card.validation
    return {
        "name": card.name,
        "kind": "prefilter",
        "ratio": "1",
        "option": "std",
        "macs_per_pixel": 0.0,
        "params": 0,
        "pre_macs_per_pixel": net.macs_per_pixel(),
        "pre_params": sum(p.numel() for p in net.parameters()),
        "steps": card.training.get("steps", 0),
        "sha256": card.sha256,
        "val_bd_rate": {
            k: val[key]
            for k, key in (("direct PSNR", "bd_psnr"), ("direct MS-SSIM", "bd_ms_ssim"))
            if isinstance(val.get(key), float)
        },
        "codecs": [card.codec],
        "metric": card.metric,
    }


@models.command(name="speed")
@click.option("--size", "sizes", multiple=True, default=["960x540", "1920x1080"], show_default=True)
@click.option("--frames", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_pre_arithmetic_opt
@_models_opt
def models_speed(
    sizes: tuple[str, ...], frames: int, as_json: bool, pre_arithmetic: str, models: str | None
) -> None:
    """Post-processing (decoder) and pre-processing (encoder) speed in frames per second, and
    whether this machine's post-processors give the bytes their cards record."""
    from wrapcodec.cards import parse_size, speed_rows

    bank = get_bank(models)
    parsed = [parse_size(size) for size in sizes]
    rows = speed_rows(bank, parsed, frames, pre_arithmetic)
    threads = torch.get_num_threads()
    if as_json:
        summary = {
            "threads": threads,
            "frames": frames,
            "pre_arithmetic": pre_arithmetic,
            "models": rows,
        }
        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title=f"frames per second, {threads} threads, pre-processors in {pre_arithmetic}")
    for col in ("model", "arithmetic", "same bytes as its card"):
        table.add_column(col)
    fps_keys = [f"{what}_fps_{w}x{h}" for w, h in parsed for what in ("post", "pre")]
    for key in fps_keys:
        table.add_column(key.replace("_fps_", " "), justify="right")
    for row in rows:
        same = {True: "yes", False: "NO", None: "-"}[row["matches_reference"]]  # type: ignore[index]
        cells = [str(row["model"]), str(row["arithmetic"]), same]
        cells += ["-" if row[k] is None else f"{row[k]:.2f}" for k in fps_keys]
        table.add_row(*cells)
    Console().print(table)


@models.command(name="calibrate")
@click.option("--data", required=True, metavar="DIR", help="Pictures (the training set).")
@click.option("--pictures", type=int, default=64, show_default=True, help="How many to use.")
@click.option("--crop", type=int, default=256, show_default=True, help="Centre crop size.")
@_models_opt
def models_calibrate(data: str, pictures: int, crop: int, models: str | None) -> None:
    """Measure each post-processor's integer arithmetic and write it into the cards."""
    from wrapcodec import cards

    if pictures < 1 or crop < 16 or crop % 8:
        raise InputError("--pictures must be >= 1 and --crop a multiple of 8, at least 16")
    bank = get_bank(models)
    if not bank.cards:
        raise InputError(f"{bank.folder}: no models to calibrate")
    for card in cards.calibrate(bank, Path(data), pictures, crop):
        assert card.arithmetic is not None
        exps = card.arithmetic.exponents
        click.echo(f"{card.name}: exponents {min(exps.values())}..{max(exps.values())}")
    click.echo(f"bank {bank.folder}: integer id {Bank(bank.folder).id_for(True).hex()}")


@models.command(name="install")
@click.argument("weights", metavar="TRAINED.safetensors")
@click.option("--dest", required=True, metavar="DIR", help="Bank folder to install into.")
@click.option("--val", default=None, metavar="DIR", help="Validate on these pictures.")
@click.option("--codec", default="x265", show_default=True, help="Codec of the validation.")
@click.option("--about", default="", help="What the training pictures were (for the card).")
@click.option("--val-about", default="", help="What the validation pictures were.")
@click.option(
    "--prior",
    type=click.IntRange(0, 7),
    default=0,
    show_default=True,
    help="Install a post-processor as the option's prior N (1-7) for the codecs and QP band "
    "it was trained on (--codec, --qp-range of its run), beside its default model (0).",
)
@click.option(
    "--serves",
    default=None,
    metavar="CODECS",
    help="Comma-separated codecs the prior serves [the codecs of its run].",
)
@click.option(
    "--bitdepths",
    type=click.Choice(["8", "10", "8,10"]),
    default=None,
    help="Bottleneck bit depths the prior serves [its run's; either, for runs before 8 bits].",
)
def models_install(
    weights: str,
    dest: str,
    val: str | None,
    codec: str,
    about: str,
    val_about: str,
    prior: int,
    serves: str | None,
    bitdepths: str | None,
) -> None:
    """Copy trained weights into a bank with their card, and validate them."""
    from wrapcodec import cards, validation

    check_input(weights)
    if val:
        get_backend(codec)  # an unknown codec is refused before anything is written
    codecs = _list(serves) if serves is not None else None
    for name in codecs or []:
        get_backend(name)
    depths = [int(d) for d in bitdepths.split(",")] if bitdepths else None
    card = cards.install(Path(weights), Path(dest), about, prior, serves=codecs, bitdepths=depths)
    if val:
        bank = Bank(Path(dest))
        card.validation = validation.validate(bank, card, Path(val), codec, about=val_about)
        cards.write_card(Path(dest), card)
        for name, bd in card.validation.bd_rate.items():
            gain = card.validation.psnr_gain_same_qp[name]
            click.echo(f"{card.name} vs {name}: BD-rate {bd}, {gain:+.3f} dB at equal QP")
    click.echo(f"installed {card.name} ({card.sha256[:16]}…) in {dest}")


@cli.command()
@click.option("--codec", default="x265", show_default=True)
@click.option("--qp", type=int, default=32, show_default=True)
@click.option("--preset", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--effort",
    type=click.Choice(list(EFFORTS)),
    default="exhaustive",
    show_default=True,
    help="Search effort (exhaustive codes and shows every option).",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep demo.wrp and demo.y4m in this directory.",
)
def demo(
    codec: str, qp: int, preset: str | None, as_json: bool, effort: str, keep: str | None
) -> None:
    """Encode the bundled Park Joy clip with RDO, decode it, and show every option."""
    clip = resources.files("wrapcodec.data") / DEMO_CLIP
    with resources.as_file(clip) as path, tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(keep) if keep else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        wrp, y4m = str(out_dir / "demo.wrp"), str(out_dir / "demo.y4m")
        backend = get_backend(codec)
        settings = settings_for(backend, qp, preset, 10)
        check_input(str(path))
        check_output(wrp, True, source=str(path))
        bank = get_bank(None)
        config = EncodeConfig(
            backend=backend,
            settings=settings,
            options=tuple(parse_options("all", bank.has, bank.where)),
            bank=bank,
            adapt=adaptation_for(effort, None),
            effort=effort,
        )
        report = _encode(str(path), wrp, config, as_json)
        decode_file(wrp, y4m)
        check = measure_files(str(path), y4m)
        if not keep:
            report.output = "(temporary file)"
        _print_report(report, as_json)
        if not as_json:
            Console().print(
                f"decoded {check.frames} frames → {y4m if keep else '(temporary)'}; "
                f"PSNR-YUV of the decoded file against the clip: {check.psnr_yuv:.3f} dB"
            )


@cli.command()
@click.argument("dataset", metavar="DATASET")
@_codec_opt
@click.option("--qps", default="22,27,32,37,42,47", show_default=True, help="Comma-separated QPs.")
@click.option("--frames", type=int, default=None, help="Use the first N frames of each sequence.")
@_preset_opt
@_bitdepth_option(
    "Bit depth of the coded bottleneck; auto: per sequence and QP, the depth whose direct coding "
    "has the lower J, as `encode` chooses it.",
    auto=True,
    default="10",
)
@click.option(
    "--options",
    "options",
    default="all",
    show_default=True,
    help="Options to measure besides direct (codes or names).",
)
@click.option("--metrics", default="psnr", show_default=True, help="psnr, ssim, vmaf.")
@click.option(
    "--rivals",
    default="",
    metavar="all|NAME,...",
    help="Also code the codec's own resampling modes at the same QPs (see `wrapcodec backends`).",
)
@_adapt_opt
@click.option(
    "--adapt-budget",
    default="",
    metavar="Nx|Ns|none",
    help="Fit the encoder's update ladder within this budget per neural point (as encode's; "
    "none: every rung) instead of one fit of the biases and tail [one fit].",
)
@_lambda_option(
    "The λ of the adapted points' updates, as encode's (--bitdepth auto chooses at λ(QP)): "
    "the codec's reference relation λ(QP) (the quantisation at λ times its slope scale), or "
    "measured per sequence and QP on direct coding's RD curve (direct coding 3 QPs up too)."
)
@click.option(
    "--interp",
    type=click.Choice(["pchip", "akima"]),
    default="pchip",
    show_default=True,
    help="BD-rate interpolation.",
)
@_pre_arithmetic_opt
@click.option("--out", "out", default=None, help="Output folder [bench-<dataset>-<codec>].")
@click.option("--jobs", type=int, default=None, help="Parallel points [cores / 2].")
@click.option("--threads", type=int, default=None, help="Encoder threads per point [cores / jobs].")
@click.option(
    "--dask",
    default=None,
    metavar="ADDRESS",
    help="Run the points on this Dask scheduler (tcp://host:8786).",
)
@_models_opt
@click.option(
    "--standard",
    "standard",
    type=click.Choice(["psnr", "ms-ssim"]),
    default=None,
    help="Bench `encode --standard` instead: direct coding, the bank's pre-filter for this "
    "metric, and the encoder's choice between them, each decoded by plain ffmpeg; BD-rates in "
    "PSNR-YUV and MS-SSIM (--qps, --frames, --preset, --out and --models apply).",
)
def bench(
    dataset: str,
    codec: str,
    qps: str,
    frames: int | None,
    preset: str | None,
    bitdepth: str,
    options: str,
    metrics: str,
    rivals: str,
    adapt_steps: int,
    adapt_budget: str,
    lam: Literal["model", "measured"],
    interp: str,
    pre_arithmetic: str,
    out: str | None,
    jobs: int | None,
    threads: int | None,
    dask: str | None,
    models: str | None,
    standard: Metric | None,
) -> None:
    """RD curves, frontiers and BD-rates of every option on DATASET (.y4m folder or file)."""
    backend = get_backend(codec)
    qp_list = parse_qps(qps, codec, backend.qp_range, minimum=2)
    if standard is not None:
        folder = Path(out or f"bench-standard-{Path(dataset).stem}-{codec}-{standard}")
        with _progress(sys.stderr.isatty()) as progress:
            task = progress.add_task("points", total=None)

            def step(text: str) -> None:
                progress.update(task, description=text)

            result = run_standard_bench(
                Path(dataset), codec, qp_list, standard, folder, frames, preset, models, step
            )
        click.echo(report_md(result))
        click.echo(f"wrote results.json and report.md to {folder}")
        return
    check_steps(adapt_steps)
    if adapt_budget:
        parse_budget(adapt_budget)  # refused here, in one line, before any point
    bank = get_bank(models)
    n_jobs = jobs or bench_plan.point_jobs()
    config = bench_plan.BenchConfig(
        dataset=dataset,
        codec=codec,
        qps=qp_list,
        frames=frames,
        preset=preset,
        bitdepth="auto" if bitdepth == "auto" else int(bitdepth),
        options=sorted({0, *(int(o.code) for o in parse_options(options, bank.has, bank.where))}),
        metrics=_list(metrics),
        jobs=n_jobs,
        threads=threads or bench_plan.point_threads(n_jobs),
        dask=dask,
        interp=interp,  # type: ignore[arg-type]
        models=str(bank.folder),
        adapt_steps=adapt_steps,
        adapt_budget=adapt_budget,
        rivals=bench_plan.rival_names(backend, _list(rivals)),
        pre_arithmetic=pre_arithmetic,
        lam=lam,
    )
    folder = Path(out or f"bench-{Path(dataset).stem}-{codec}")
    command = _resolved_command("bench", dataset, skip=("jobs", "threads", "dask", "out"))
    with _progress(sys.stderr.isatty()) as progress:
        results, written = bench_run.run_bench(config, folder, command, _Bar(progress, "points"))
    console = Console()
    console.print(_bd_table(results, console.width))
    cached = results.cached_points
    other = results.computed_points - (len(results.points) - cached)
    beside = f", and {other} direct points that chose the depth or measured λ" if other else ""
    console.print(
        f"{len(results.points)} points ({len(results.points) - cached} computed, "
        f"{cached} from cache{beside}); wrote "
        f"{', '.join(p.name for p in written[:3])} and {len(written) - 3} plots to {folder}"
    )


def _list(text: str) -> list[str]:
    """A comma-separated option's entries, blank ones left out."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _resolved_command(name: str, dataset: str, skip: tuple[str, ...]) -> str:
    """The command as resolved (defaults filled in, the ``skip`` options left out), so that a
    rerun reproduces the figures."""
    params = click.get_current_context().params
    flags = [
        f"--{param.replace('_', '-')}={value}"
        for param, value in params.items()
        if value is not None and param not in ("dataset", *skip)
    ]
    return shlex.join(["wrapcodec", name, dataset, *flags])


def _bd_table(results: BenchResults, width: int) -> Table:
    """The envelope BD-rates (PSNR-YUV) as a table of at most ``width`` characters: a line
    per row with its full name, the average sequence, the mean of sequences and that mean in
    PSNR-Y (luma alone, where a gain in chroma does not count), then as many sequences as fit
    (report.md has them all), so that no name or figure is cut."""
    rows = [
        (row, by_metric)
        for row in bench_analysis.all_rows(results.config.rivals)
        if "psnr_yuv" in (by_metric := results.bd_rate.get(row, {}))
    ]
    shown = [(row, by_metric["psnr_yuv"]) for row, by_metric in rows]
    headers = {bench_analysis.AVERAGE: bench_analysis.AVERAGE, bench_analysis.MEAN: "mean"}
    headers |= {sequence: sequence for sequence in results.sequences}
    columns = [_Column("row", [row for row, _ in shown], right=False, required=True)]
    for i, (column, header) in enumerate(headers.items()):
        figures = [bench_report.fmt_bd(per.value(column, "envelope")) for _, per in shown]
        columns.append(_Column(header, figures, required=i < 2))
        if column == bench_analysis.MEAN:
            luma = [by_metric.get("psnr_y") for _, by_metric in rows]
            cells = [bench_report.fmt_bd(y.value(column, "envelope")) if y else "n/a" for y in luma]
            columns.append(_Column("mean Y", cells, required=True))
    caption = "mean: of the sequences' BD-rates; mean Y: the same in PSNR-Y"
    title = f"BD-rate vs direct {results.config.codec}, PSNR-YUV, RD envelope"
    table, left_out = _fitted_table(columns, width, title=title)
    if left_out:
        caption += f"; {_more(left_out, 'sequence')} in report.md"
    table.caption = caption
    return table


@cli.command("bench-effort")
@click.argument("dataset", metavar="DATASET")
@_codec_opt
@click.option("--qps", default="22,27,32,37,42,47", show_default=True, help="Comma-separated QPs.")
@_preset_opt
@_bitdepth_opt
@click.option("--options", "options", default="all", show_default=True, help="Candidate options.")
@click.option(
    "--efforts",
    default=None,
    help="Effort levels to measure (exhaustive is the reference and always measured) [every "
    "level; without adaptation, those whose searches differ: "
    + ",".join(bench_effort_lib.searches())
    + "].",
)
@click.option(
    "--adapt-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Content adaptation of every level (the same for all, so they compare).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Candidates each encode codes at once [as encode: one per core, at most 4].",
)
@_pre_arithmetic_opt
@click.option("--out", "out", default=None, help="Output folder [bench-effort-<dataset>-<codec>].")
@_models_opt
def bench_effort(
    dataset: str,
    codec: str,
    qps: str,
    preset: str | None,
    bitdepth: str,
    options: str,
    efforts: str | None,
    adapt_steps: int,
    jobs: int | None,
    pre_arithmetic: str,
    out: str | None,
    models: str | None,
) -> None:
    """Time and BD-rate loss of each --effort level against exhaustive on DATASET.

    Runs one encode at a time (timings need the machine to themselves); cached and resumable."""
    backend = get_backend(codec)
    qp_list = parse_qps(qps, codec, backend.qp_range)
    check_steps(adapt_steps)
    bank = get_bank(models)
    config = bench_effort_lib.EffortConfig(
        dataset=dataset,
        codec=codec,
        qps=qp_list,
        preset=preset,
        bitdepth=int(bitdepth),
        options=[int(o.code) for o in parse_options(options, bank.has, bank.where)],
        efforts=bench_effort_lib.levels(
            _list(efforts) if efforts else bench_effort_lib.default_levels(adapt_steps > 0)
        ),
        adapt_steps=adapt_steps,
        jobs=jobs,
        pre_arithmetic=pre_arithmetic,
        models=str(bank.folder),
    )
    folder = Path(out or f"bench-effort-{Path(dataset).stem}-{codec}")
    command = _resolved_command("bench-effort", dataset, skip=("out",))
    with _progress(sys.stderr.isatty()) as progress:
        _, report = bench_effort_lib.run_effort_bench(
            config, folder, command, _Bar(progress, "encodes")
        )
    click.echo(report)


@cli.command()
@click.option("--kind", type=click.Choice(["post", "wrapper"]), required=True)
@click.option("--ratio", type=click.Choice(["1", "1/2", "2/3", "1/4"]), required=True)
@click.option(
    "--data",
    required=True,
    metavar="DIR",
    help="Training images; with --proxy pairs, a pair cache (`wrapcodec pairs`).",
)
@click.option("--val", default=None, metavar="DIR", help="Validation images.")
@click.option("--steps", type=int, required=True, help="Train until this step.")
@click.option(
    "--proxy",
    type=click.Choice(["jpeg", "codec", "pairs"]),
    default="jpeg",
    show_default=True,
    help="What stands between the networks: the JPEG proxy, the real codec in the loop, or "
    "(post-processors) the pairs the real codecs coded once.",
)
@click.option(
    "--codec",
    default="x265",
    show_default=True,
    help="Backend for --proxy codec (and validation); with pairs, a comma-separated list.",
)
@click.option(
    "--qp-range", default="22-47", show_default=True, help="QPs drawn (--proxy codec, pairs)."
)
@_bitdepth_option(
    "Bottleneck bit depth of the pairs (`pairs --bitdepth`) or of the codec in the loop."
)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--crop", type=int, default=256, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--lam", type=float, default=16.0, show_default=True, help="λ of MSE + λ·rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val-every", type=int, default=100, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 …")
@click.option("--threads", type=int, default=None, help="CPU threads [all cores].")
@click.option("--init", default=None, metavar="FILE", help="Start from these weights.")
@click.option("--freeze-pre", is_flag=True, help="Wrapper: train the post-processor only.")
@click.option("--resume", is_flag=True, help="Continue from OUT's checkpoint.")
@click.option("--out", required=True, metavar="FILE.safetensors")
def train(**kw: Any) -> None:
    """Train a post-processor or a pre+post wrapper."""
    from wrapcodec.train import TrainConfig, Trainer, check_device, parse_qp_range

    if kw["threads"]:
        torch.set_num_threads(kw["threads"])
    check_device(kw["device"])
    qp_min, qp_max = parse_qp_range(kw["qp_range"])
    out = Path(kw["out"])
    cfg = TrainConfig(
        **{
            k: kw[k]
            for k in (
                "kind",
                "ratio",
                "data",
                "val",
                "steps",
                "proxy",
                "codec",
                "batch",
                "crop",
                "lr",
                "lam",
                "seed",
                "val_every",
                "device",
                "init",
                "freeze_pre",
            )
        },
        qp_min=qp_min,
        qp_max=qp_max,
        bitdepth=8 if kw["bitdepth"] == "8" else 10,
    )
    trainer = Trainer(cfg, out)
    if kw["resume"]:
        trainer.resume()
    elif trainer.files.path.exists():
        raise InputError(f"{trainer.files.path} exists: pass --resume to continue it")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task(
            f"{cfg.kind} {cfg.ratio}", total=cfg.steps, completed=trainer.step, stats=""
        )

        def report(step: int, r: Any, val: dict[str, float] | None) -> None:
            stats = f"loss {r.loss:.2f}  PSNR {r.psnr:.2f} dB  rate {r.bpp:.3f} bpp  q {r.q:.2f}"
            progress.update(task, completed=step, stats=stats)
            if val:
                text = "  ".join(f"{k} {v:.3f}" for k, v in val.items())
                progress.console.print(f"step {step}: {text}")

        trainer.run(report)
    click.echo(f"wrote {out} (step {trainer.step})")


@cli.command("train-prefilter")
@click.option(
    "--data", required=True, metavar="CACHE", help="A pair cache (`wrapcodec pairs`) with r = 1."
)
@click.option("--val", required=True, metavar="DIR", help="Validation photos (at least 256 px).")
@click.option("--metric", type=click.Choice(["psnr", "ms-ssim"]), default="psnr", show_default=True)
@click.option("--codec", default="x265", show_default=True, help="The codec in the loop.")
@click.option("--steps", type=click.IntRange(min=0), default=1500, show_default=True)
@click.option(
    "--rate-steps",
    type=click.IntRange(min=0),
    default=600,
    show_default=True,
    help="Steps fitting the rate model to the cache's bits first.",
)
@click.option("--val-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=5e-4,
    show_default=True,
    help="The filter's learning rate.",
)
@click.option(
    "--rate-from",
    default=None,
    metavar="FILE.ckpt",
    help="Start from this run's rate model instead of fitting one.",
)
@click.option(
    "--surrogate",
    type=click.Choice(["straight-through", "error-model", "simulator"]),
    default=None,
    help="How the codec's distortion reaches the filter: passed straight through the codec, "
    "the filter's own change plus the learned codec error, or through the codec simulator of "
    "--simulator (whose rate head is then the rate model) [psnr: error-model, ms-ssim: "
    "straight-through; with --simulator: simulator].",
)
@click.option(
    "--simulator",
    default=None,
    metavar="FILE.safetensors",
    help="A codec simulator (`wrapcodec train-simulator`) of the codec, card beside it; "
    "fitted on to the filtered clips' real output as training goes.",
)
@click.option(
    "--lambda",
    "lam",
    type=click.Choice(["model", "measured"]),
    default="model",
    show_default=True,
    help="The price of a bit: the encoder's relation λ(QP), or each training clip's own, the "
    "slope of its direct coding's RD curve in the cache (QPs then drawn from the cache's).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    required=True,
    metavar="DIR/standard/prefilter-CODEC-METRIC.safetensors",
    help="Weights; its card, checkpoint (resumed when there) and log go beside it.",
)
def train_prefilter(
    data: str,
    val: str,
    metric: Metric,
    codec: str,
    steps: int,
    rate_steps: int,
    val_every: int,
    lr: float,
    rate_from: str | None,
    surrogate: Literal["straight-through", "error-model", "simulator"] | None,
    simulator: str | None,
    lam: Literal["model", "measured"],
    seed: int,
    out: str,
) -> None:
    """Train a standard-stream pre-filter with the real codec in the loop and a learned rate."""
    from wrapcodec.prefilter_train import PreFilterTrainConfig, PreFilterTrainer
    from wrapcodec.simulator_train import load_simulator

    get_backend(codec)
    if simulator is None and surrogate == "simulator":
        raise InputError("--surrogate simulator needs --simulator FILE")
    if simulator is not None and surrogate not in (None, "simulator"):
        raise InputError(f"--simulator is for the simulator surrogate, not --surrogate {surrogate}")
    sim = None
    if simulator is not None:
        sim, card = load_simulator(Path(simulator))
        if card.codec != codec:
            raise InputError(f"{simulator}: a simulator of {card.codec}, not of {codec}")
        surrogate = "simulator"
    cfg = PreFilterTrainConfig(
        codec=codec,
        target=metric,
        steps=steps,
        lr=lr,
        rate_pretrain_steps=rate_steps,
        validate_every=val_every,
        surrogate=surrogate or ("error-model" if metric == "psnr" else "straight-through"),
        lam=lam,
        seed=seed,
    )
    trainer = PreFilterTrainer(cfg, Path(data), Path(val), Path(out), sim)
    if rate_from is not None and not trainer.checkpoint.exists():
        trainer.take_rate_model(Path(rate_from))
    trainer.run(lambda text: click.echo(text, err=True))


@cli.command("train-simulator")
@click.option(
    "--data",
    required=True,
    metavar="CACHE",
    help="A pair cache with r = 1 at 8 bits (`wrapcodec pairs --ratios 1 --bitdepth 8`).",
)
@click.option("--val", required=True, metavar="DIR", help="Validation photos (at least 256 px).")
@click.option("--codec", default="x265", show_default=True, help="The codec to simulate.")
@click.option("--steps", type=click.IntRange(min=0), default=2000, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--val-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    required=True,
    metavar="FILE.safetensors",
    help="Weights; its card, checkpoint (resumed when there) and log go beside it.",
)
def train_simulator(
    data: str,
    val: str,
    codec: str,
    steps: int,
    batch: int,
    lr: float,
    val_every: int,
    seed: int,
    out: str,
) -> None:
    """Train a codec simulator (decoded picture and bits) on a codec's real output."""
    from wrapcodec.simulator_train import SimulatorTrainConfig, SimulatorTrainer

    get_backend(codec)
    cfg = SimulatorTrainConfig(
        codec=codec, steps=steps, batch=batch, lr=lr, validate_every=val_every, seed=seed
    )
    trainer = SimulatorTrainer(cfg, Path(data), Path(val), Path(out))
    trainer.run(lambda text: click.echo(text, err=True))


@cli.command("pairs")
@click.option("--data", required=True, metavar="DIR", help="Training photos.")
@click.option("--out", required=True, metavar="CACHE", help="Pair cache (made or resumed).")
@click.option("--codecs", default="x265", show_default=True, help="Comma-separated backends.")
@click.option("--ratios", default="1,1/2,2/3,1/4", show_default=True)
@click.option(
    "--qps", default=",".join(map(str, QPS)), show_default=True, help="Comma-separated QPs."
)
@click.option("--frames", type=click.IntRange(2, 64), default=8, show_default=True)
@click.option("--size", type=click.IntRange(64, 1024), default=256, show_default=True)
@click.option("--preset", default=None, help="Encoder preset [backend default].")
@_bitdepth_option("Bit depth of the coded bottleneck (8: kept apart, in CODEC-8bit-cN/).")
@click.option(
    "--wrappers",
    is_flag=True,
    help="Code through the bank's wrapper pre-processors of the ratios, for their "
    "post-processors (`train --kind wrapper --freeze-pre`).",
)
@_models_opt
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True)
def pairs_command(
    data: str,
    out: str,
    codecs: str,
    ratios: str,
    qps: str,
    frames: int,
    size: int,
    preset: str | None,
    bitdepth: str,
    wrappers: bool,
    models: str | None,
    jobs: int,
) -> None:
    """Code pseudo-videos of training photos with real codecs, for `train --proxy pairs`.

    Each photo becomes a clip of FRAMES crops of SIZE×SIZE that pan (and on every second
    clip zoom); each clip is coded at each codec, ratio and QP by the encoder's own pipeline
    and decoded as the decoder does: behind bilinear downsampling (the post-only options)
    or, with --wrappers, through the wrapper's pre-processor of each ratio (kept apart under
    its weights' digest). What is in CACHE already is kept: run it again to resume. Never
    give it evaluation sequences."""
    from wrapcodec import pairs

    spec = pairs.ClipSpec(frames=frames, size=size)
    found = pairs.wrapper_pres(get_bank(models), pairs.parse_ratios(ratios)) if wrappers else {}
    digests = {ratio: digest for ratio, (digest, _) in found.items()}
    pres = dict(found.values())
    points = list(pairs.iter_points_text(codecs, ratios, qps, int(bitdepth), digests))
    cache = Path(out)
    pairs.claim_settings(cache, points, preset, record=False)  # before anything is written
    clips = pairs.make_clips(Path(data), cache, spec)
    with Progress(
        TextColumn("pairs"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task("pairs", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        coded = pairs.build(clips, cache, points, jobs, preset, report, pres)
    click.echo(f"{cache}: {len(clips)} clips, {coded} pairs coded now")


def _settle_stdout() -> None:
    """After a failed write to stdout (a full disk, a reader that went away), the bytes still
    buffered would make Python print a second error on its way out; send them to /dev/null so
    that the one-line message stays the only one."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def main() -> None:
    """Run the command line (``wrapcodec.__main__.main``, the console script, imports this
    module and calls it, catching a Ctrl-C during the imports)."""
    try:
        cli(prog_name="wrapcodec")
    finally:
        _settle_stdout()
