"""``mt``: the command line of the Model Trainer API, on ``mt_client.Client``.

Exit codes: 0 the command (or the followed job) succeeded; 1 the job failed or was cancelled, or the API
refused or failed the call; 2 a usage error (a bad option, or a request the API refused with 400); 3 the API
is unreachable; 130 detached from a followed job with Ctrl-C (the job goes on).

``--url``/``MT_URL`` (default ``http://127.0.0.1:8000``) and ``--api-key``/``MT_API_KEY`` choose the API.
``--json`` on any command prints the answer as the API's JSON (a followed job: one event a line).
"""

from __future__ import annotations

import inspect
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn
from rich.table import Table

from mt_client.calls import ArtifactKind
from mt_client.client import DEFAULT_URL, Client
from mt_client.errors import ApiError, BadRequest, ClientError, Unreachable
from mt_client.options import build_request, struct_options
from mt_client.render import FollowView, png_plot, run_table, terminal_plot, tokenizer_table
from mt_contracts import codec
from mt_contracts.corpora import CorpusInfo, RunEstimate, TokenizerEstimate
from mt_contracts.events import JobEvent, StatusEvent
from mt_contracts.jobs import TERMINAL_STATUSES, EvalJob, JobStatus, RunJob, TokenizerJob
from mt_contracts.requests import (
    EvaluateRequest,
    ExportRequest,
    GenerateRequest,
    ResumeRunRequest,
    TrainRunRequest,
    TrainTokenizerRequest,
)
from mt_contracts.webhooks import WEBHOOK_EVENT_TYPES, CreateWebhookRequest, WebhookEventType

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_DETACHED = 0, 1, 2, 3, 130
STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class Settings:
    """The global options, resolved once by the ``mt`` group."""

    url: str
    api_key: str | None
    timeout: float
    json: bool
    retries: int


class JobEnded(click.exceptions.Exit):
    """A followed job ended (or was detached from): exit with its code."""


def _settings() -> Settings:
    settings = click.get_current_context().find_object(Settings)
    if settings is None:
        raise click.UsageError("mt: run through the mt group")
    return settings


def _client() -> Client:
    settings = _settings()
    return Client(settings.url, api_key=settings.api_key, timeout=settings.timeout, retries=settings.retries)


def _as_json() -> bool:
    context = click.get_current_context()
    local = context.params.get("as_json")
    return _settings().json or local is True


def _console() -> Console:
    return Console(highlight=False)


def _help(summary: str, struct: type) -> str:
    """A command's help: ``summary``, then the request Struct's docstring (the contract's own words)."""
    return f"{summary}\n\n{inspect.cleandoc(struct.__doc__ or '')}"


def _emit(value: object) -> None:
    """One JSON document on stdout."""
    click.echo(codec.encode(value).decode())


json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--url", envvar="MT_URL", default=DEFAULT_URL, show_default=True, help="API base URL (MT_URL).")
@click.option("--api-key", envvar="MT_API_KEY", default=None, help="API key sent as a bearer token (MT_API_KEY).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds per request.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables (any command).")
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=4,
    show_default=True,
    envvar="MT_RETRIES",
    help="Retries of a connection error or 503, with backoff (MT_RETRIES).",
)
@click.version_option("0.1.0", prog_name="mt")
@click.pass_context
def cli(context: click.Context, url: str, api_key: str | None, timeout: float, as_json: bool, retries: int) -> None:
    """Train tokenizers and GPT-2 models on a Model Trainer API, follow them live, fetch their files.

    Exit codes: 0 succeeded, 1 failed or cancelled (or the API refused the call), 2 usage error,
    3 API unreachable, 130 detached with Ctrl-C (the job goes on).
    """
    context.obj = Settings(url=url, api_key=api_key or None, timeout=timeout, json=as_json, retries=retries)


# ---------------------------------------------------------------- following


def _follow(client: Client, job_id: str, *, label: str) -> None:
    """Follow ``job_id`` to its end: a live view (or JSON lines with ``--json``), then its summary; exits
    with the job's outcome. Ctrl-C detaches and says how to reattach."""
    as_json = _as_json()
    console = _console()
    kind = "runs" if job_id.startswith("run_") else "tokenizers"
    status: str | None = None
    try:
        if as_json:
            for streamed in client.follow(job_id):
                _emit(streamed.event)
                status = _status_of(streamed.event, status)
        else:
            with FollowView(console, job_id) as view:
                for streamed in client.follow(job_id):
                    view.show(streamed.event)
            status = view.status
    except KeyboardInterrupt:
        Console(stderr=True, highlight=False).print(
            f"\ndetached from {label} {job_id}: the {label} goes on; `mt {kind} follow {job_id}` reattaches",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
        raise JobEnded(EXIT_DETACHED) from None
    record: RunJob | TokenizerJob = client.get_run(job_id) if kind == "runs" else client.get_tokenizer(job_id)
    if not as_json:
        console.print(run_table(record) if isinstance(record, RunJob) else tokenizer_table(record))
    final = status if status in TERMINAL_STATUSES else record.status
    raise JobEnded(EXIT_OK if final == "succeeded" else EXIT_FAILED)


def _status_of(event: JobEvent, previous: str | None) -> str | None:
    match event:
        case StatusEvent(status=status):
            return status
    return previous


def _accepted(job_id: str, label: str, location: str, detach: bool) -> None:
    """Say the job was queued; a detached one prints its bare id on stdout (``ID=$(mt ... --detach)``)."""
    if _as_json():
        return
    Console(stderr=True, highlight=False).print(f"{label} [bold]{job_id}[/] queued ({location})")
    if detach:
        click.echo(job_id)


# ---------------------------------------------------------------- tokenizers


DRY_RUN_OPTION = click.Option(
    ["--dry-run", "dry_run"],
    is_flag=True,
    help="Validate and print the estimate (time, memory, tokens); queue nothing.",
)


def _estimate(estimate: TokenizerEstimate | RunEstimate) -> None:
    """Print a dry run's estimate: its JSON with --json, else one field a line and its warnings."""
    if _as_json():
        _emit(estimate)
        return
    console = _console()
    for name, value in msgspec.structs.asdict(estimate).items():
        if name != "warnings" and value is not None:
            console.print(f"{name:32} {value:,}" if isinstance(value, int) else f"{name:32} {value}", markup=False)
    for warning in estimate.warnings:
        console.print(f"warning: {warning}", markup=False, style="yellow")


@cli.group()
def tokenizers() -> None:
    """Tokenizer jobs: train, list, inspect, encode, logs, cancel."""


def _train_tokenizer(detach: bool, as_json: bool, dry_run: bool, **values: object) -> None:
    request = build_request(TrainTokenizerRequest, values)
    with _client() as client:
        if dry_run:
            _estimate(client.dry_run_tokenizer(request))
            return
        accepted = client.train_tokenizer(request)
        if _as_json():
            _emit(accepted)
        _accepted(accepted.id, "tokenizer", accepted.location, detach)
        if not detach:
            _follow(client, accepted.id, label="tokenizer")


tokenizers.add_command(
    click.Command(
        "train",
        callback=_train_tokenizer,
        params=[
            *struct_options(TrainTokenizerRequest),
            click.Option(["--detach"], is_flag=True, help="Print the id and return; do not follow."),
            DRY_RUN_OPTION,
            click.Option(["--json", "as_json"], is_flag=True, help="Print the API's JSON (JSON lines when following)."),
        ],
        help=_help("Queue a tokenizer job, then follow it (unless --detach).", TrainTokenizerRequest),
    )
)


@tokenizers.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True, help="Jobs per page.")
@click.option("--cursor", default=None, help="next_cursor of the previous page.")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only jobs in this status.")
@json_option
def tokenizers_list(limit: int, cursor: str | None, status: JobStatus | None, as_json: bool) -> None:
    """Tokenizer jobs, newest first."""
    with _client() as client:
        page = client.list_tokenizers(limit, cursor, status)
    if _as_json():
        _emit(page)
        return
    table = Table("id", "status", "method", "vocab_size", "corpus_path", "created_at", title_justify="left")
    for job in page.items:
        vocab = str(job.result.vocab_size) if job.result else str(job.request.vocab_size)
        table.add_row(
            job.id, job.status, job.request.method, vocab, job.request.corpus_path, job.created_at.isoformat()
        )
    _console().print(table)
    if page.next_cursor:
        _console().print(f"more: --cursor {page.next_cursor}")


@tokenizers.command("get")
@click.argument("tokenizer_id")
@json_option
def tokenizers_get(tokenizer_id: str, as_json: bool) -> None:
    """One tokenizer job: status, result and statistics, or error."""
    with _client() as client:
        job = client.get_tokenizer(tokenizer_id)
    _emit(job) if _as_json() else _console().print(tokenizer_table(job))


@tokenizers.command("encode")
@click.argument("tokenizer_id")
@click.argument("text")
@json_option
def tokenizers_encode(tokenizer_id: str, text: str, as_json: bool) -> None:
    """Encode TEXT with a succeeded tokenizer: ids, tokens, decoded text."""
    with _client() as client:
        encoded = client.encode(tokenizer_id, text)
    if _as_json():
        _emit(encoded)
        return
    table = Table("id", "token", title=f"{len(encoded.ids)} tokens", title_justify="left")
    for token_id, token in zip(encoded.ids, encoded.tokens, strict=True):
        table.add_row(str(token_id), repr(token))
    console = _console()
    console.print(table)
    console.print(f"decoded: {encoded.decoded!r}")


def _print_events(events: list[JobEvent]) -> None:
    if _as_json():
        for event in events:
            _emit(event)
        return
    console = _console()
    for event in events:
        console.print(f"[dim]{event.ts}[/] {event.level:<7} {event.event:<12} {event.message}")


@tokenizers.command("logs")
@click.argument("tokenizer_id")
@click.option("--tail", type=click.IntRange(1, 10_000), default=100, show_default=True, help="How many last events.")
@click.option("--follow", "-f", "follow", is_flag=True, help="Then follow the live stream to the end.")
@json_option
def tokenizers_logs(tokenizer_id: str, tail: int, follow: bool, as_json: bool) -> None:
    """The tokenizer job's last events (from logs.jsonl); --follow streams on."""
    with _client() as client:
        if follow:
            _follow(client, tokenizer_id, label="tokenizer")
        _print_events(client.tokenizer_logs(tokenizer_id, tail))


@tokenizers.command("follow")
@click.argument("tokenizer_id")
@json_option
def tokenizers_follow(tokenizer_id: str, as_json: bool) -> None:
    """Follow the tokenizer job live to its end; Ctrl-C detaches (the job goes on)."""
    with _client() as client:
        _follow(client, tokenizer_id, label="tokenizer")


@tokenizers.command("cancel")
@click.argument("tokenizer_id")
@json_option
def tokenizers_cancel(tokenizer_id: str, as_json: bool) -> None:
    """Cancel the tokenizer job (a running one stops within seconds)."""
    with _client() as client:
        job = client.cancel_tokenizer(tokenizer_id)
    _emit(job) if _as_json() else _console().print(f"tokenizer {job.id} {job.status}")


# ---------------------------------------------------------------- runs


@cli.group()
def runs() -> None:
    """Language-model training runs, any family: train, follow, inspect, evaluate, generate, export, download."""


def _train_run(detach: bool, as_json: bool, dry_run: bool, **values: object) -> None:
    request = build_request(TrainRunRequest, values)
    with _client() as client:
        if dry_run:
            _estimate(client.dry_run_run(request))
            return
        accepted = client.train_run(request)
        if _as_json():
            _emit(accepted)
        _accepted(accepted.id, "run", accepted.location, detach)
        if not detach:
            _follow(client, accepted.id, label="run")


runs.add_command(
    click.Command(
        "train",
        callback=_train_run,
        params=[
            *struct_options(TrainRunRequest),
            click.Option(["--detach"], is_flag=True, help="Print the id and return; do not follow."),
            DRY_RUN_OPTION,
            click.Option(["--json", "as_json"], is_flag=True, help="Print the API's JSON (JSON lines when following)."),
        ],
        help=_help("Queue a training run, then follow it (unless --detach).", TrainRunRequest),
    )
)


@runs.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True, help="Runs per page.")
@click.option("--cursor", default=None, help="next_cursor of the previous page.")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only runs in this status.")
@json_option
def runs_list(limit: int, cursor: str | None, status: JobStatus | None, as_json: bool) -> None:
    """Runs, newest first."""
    with _client() as client:
        page = client.list_runs(limit, cursor, status)
    if _as_json():
        _emit(page)
        return
    table = Table("id", "status", "step", "val_loss", "tokenizer_id", "created_at", title_justify="left")
    for run in page.items:
        step = f"{run.progress.step}/{run.progress.max_steps}" if run.progress else "-"
        val = run.metrics.val_loss if run.metrics else (run.last_eval.val_loss if run.last_eval else None)
        table.add_row(
            run.id,
            run.status,
            step,
            "-" if val is None else f"{val:.4f}",
            run.request.tokenizer_id,
            run.created_at.isoformat(),
        )
    _console().print(table)
    if page.next_cursor:
        _console().print(f"more: --cursor {page.next_cursor}")


@runs.command("get")
@click.argument("run_id")
@json_option
def runs_get(run_id: str, as_json: bool) -> None:
    """One run: status, progress or final metrics, checkpoint, error."""
    with _client() as client:
        run = client.get_run(run_id)
    _emit(run) if _as_json() else _console().print(run_table(run))


@runs.command("follow")
@click.argument("run_id")
@json_option
def runs_follow(run_id: str, as_json: bool) -> None:
    """Follow the run live: a progress bar (step / total, loss, val loss, tokens/s, ETA), then a summary.
    Ctrl-C detaches; the run goes on."""
    with _client() as client:
        _follow(client, run_id, label="run")


@runs.command("logs")
@click.argument("run_id")
@click.option("--tail", type=click.IntRange(1, 10_000), default=100, show_default=True, help="How many last events.")
@click.option("--follow", "-f", "follow", is_flag=True, help="Follow the live stream to the end instead.")
@json_option
def runs_logs(run_id: str, tail: int, follow: bool, as_json: bool) -> None:
    """The run's last events (from logs.jsonl); --follow streams on."""
    with _client() as client:
        if follow:
            _follow(client, run_id, label="run")
        _print_events(client.run_logs(run_id, tail))


@runs.command("cancel")
@click.argument("run_id")
@json_option
def runs_cancel(run_id: str, as_json: bool) -> None:
    """Cancel the run: a running one checkpoints and stops within seconds."""
    with _client() as client:
        run = client.cancel_run(run_id)
    _emit(run) if _as_json() else _console().print(f"run {run.id} {run.status}")


def _resume(run_id: str, detach: bool, as_json: bool, **values: object) -> None:
    request = build_request(ResumeRunRequest, values)
    with _client() as client:
        accepted = client.resume_run(run_id, request)
        if _as_json():
            _emit(accepted)
        _accepted(accepted.id, "run", accepted.location, detach)
        if not detach:
            _follow(client, accepted.id, label="run")


runs.add_command(
    click.Command(
        "resume",
        callback=_resume,
        params=[
            click.Argument(["run_id"]),
            *struct_options(ResumeRunRequest),
            click.Option(["--detach"], is_flag=True, help="Return at once; do not follow."),
            click.Option(["--json", "as_json"], is_flag=True, help="Print the API's JSON."),
        ],
        help=_help("Put a failed or cancelled run back on the queue, then follow it.", ResumeRunRequest),
    )
)


@runs.command("checkpoints")
@click.argument("run_id")
@json_option
def runs_checkpoints(run_id: str, as_json: bool) -> None:
    """The run's kept checkpoints, oldest first."""
    with _client() as client:
        kept = client.checkpoints(run_id)
    if _as_json():
        _emit(kept)
        return
    table = Table("step", "train_loss", "val_loss", "size_bytes", "created_at", "path", title_justify="left")
    for item in kept:
        table.add_row(
            str(item.step),
            "-" if item.train_loss is None else f"{item.train_loss:.4f}",
            "-" if item.val_loss is None else f"{item.val_loss:.4f}",
            f"{item.size_bytes:,}",
            item.created_at.isoformat(),
            item.path,
        )
    _console().print(table)


@runs.command("metrics")
@click.argument("run_id")
@click.option("--plot", is_flag=True, help="Draw the loss curves in the terminal.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write them as a PNG.")
@json_option
def runs_metrics(run_id: str, plot: bool, png: Path | None, as_json: bool) -> None:
    """Training loss and validation results by step; --plot draws them, --png FILE writes a PNG."""
    with _client() as client:
        series = client.metrics(run_id)
    console = _console()
    if png is not None:
        png_plot(series, png, f"run {run_id}")
        if not _as_json():
            console.print(f"wrote {png}")
    if _as_json():
        _emit(series)
        return
    if plot:
        click.echo(terminal_plot(series, min(console.width, 100), 20))
        return
    table = Table("step", "train_loss", "val_loss", "tokens_per_second", title_justify="left")
    val = {point.step: point.val_loss for point in series.val}
    for point in series.train:
        shown = val.pop(point.step, None)
        table.add_row(
            str(point.step),
            f"{point.train_loss:.4f}",
            "" if shown is None else f"{shown:.4f}",
            f"{point.tokens_per_second:,.0f}",
        )
    for step, loss in sorted(val.items()):
        table.add_row(str(step), "", f"{loss:.4f}", "")
    console.print(table)


def _eval_table(job: EvalJob) -> Table:
    table = Table(title=f"evaluation {job.id} of {job.run_id}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("status", job.status)
    table.add_row("split", job.request.split)
    if job.result is not None:
        result = job.result
        for name, value in (
            ("step", str(result.step)),
            ("loss", f"{result.loss:.4f}"),
            ("perplexity", f"{result.perplexity:.2f}"),
            ("bits_per_byte", f"{result.bits_per_byte:.4f}"),
            ("tokens", f"{result.tokens:,}"),
            ("bytes", f"{result.bytes:,}"),
        ):
            table.add_row(name, value)
    if job.error is not None:
        table.add_row("error", f"{job.error.code}: {job.error.message}")
    return table


def _evaluate(run_id: str, wait: bool, as_json: bool, **values: object) -> None:
    request = build_request(EvaluateRequest, values)
    with _client() as client:
        accepted = client.evaluate(run_id, request)
        eval_id = accepted.id
        if not wait:
            _emit(accepted) if _as_json() else _console().print(f"evaluation [bold]{eval_id}[/] queued")
            return
        job = client.get_eval(run_id, eval_id)
        while job.status not in TERMINAL_STATUSES:
            time.sleep(0.5)
            job = client.get_eval(run_id, eval_id)
    _emit(job) if _as_json() else _console().print(_eval_table(job))
    raise JobEnded(EXIT_OK if job.status == "succeeded" else EXIT_FAILED)


runs.add_command(
    click.Command(
        "evaluate",
        callback=_evaluate,
        params=[
            click.Argument(["run_id"]),
            *struct_options(EvaluateRequest),
            click.Option(["--wait"], is_flag=True, help="Wait for the result and print it."),
            click.Option(["--json", "as_json"], is_flag=True, help="Print the API's JSON."),
        ],
        help=_help("Queue an evaluation of the run.", EvaluateRequest),
    )
)


@runs.command("evals")
@click.argument("run_id")
@click.argument("eval_id", required=False)
@click.option("--latest", is_flag=True, help="Only the newest evaluation.")
@json_option
def runs_evals(run_id: str, eval_id: str | None, latest: bool, as_json: bool) -> None:
    """The run's evaluations, newest first; EVAL_ID or --latest for one."""
    with _client() as client:
        if eval_id is not None or latest:
            job = client.get_eval(run_id, eval_id) if eval_id is not None else client.latest_eval(run_id)
            _emit(job) if _as_json() else _console().print(_eval_table(job))
            return
        jobs = client.list_evals(run_id)
    if _as_json():
        _emit(jobs)
        return
    table = Table("id", "status", "split", "step", "loss", "bits_per_byte", title_justify="left")
    for job in jobs:
        result = job.result
        table.add_row(
            job.id,
            job.status,
            job.request.split,
            str(result.step) if result else "-",
            f"{result.loss:.4f}" if result else "-",
            f"{result.bits_per_byte:.4f}" if result else "-",
        )
    _console().print(table)


def _generate(run_id: str, as_json: bool, **values: object) -> None:
    request = build_request(GenerateRequest, values)
    with _client() as client:
        answer = client.generate(run_id, request)
    if _as_json():
        _emit(answer)
        return
    console = _console()
    for number, sample in enumerate(answer.samples, start=1):
        console.rule(f"sample {number}: {sample.tokens} tokens, {sample.finish_reason}")
        console.print(request.prompt + sample.text, markup=False)
    console.print(f"[dim]seed {answer.seed}, step {answer.step}, {answer.seconds:.2f} s[/]")


runs.add_command(
    click.Command(
        "generate",
        callback=_generate,
        params=[
            click.Argument(["run_id"]),
            *struct_options(GenerateRequest),
            click.Option(["--json", "as_json"], is_flag=True, help="Print the API's JSON."),
        ],
        help=_help("Sample text from the run's model.", GenerateRequest),
    )
)


def _export(run_id: str, as_json: bool, **values: object) -> None:
    request = build_request(ExportRequest, values)
    with _client() as client:
        answer = client.export(run_id, request)
    if _as_json():
        _emit(answer)
        return
    console = _console()
    console.print(f"exported step {answer.step} to {answer.directory}")
    table = Table("path", "size", "sha256", title_justify="left")
    for entry in answer.files:
        table.add_row(entry.path, f"{entry.size:,}", entry.sha256)
    console.print(table)


runs.add_command(
    click.Command(
        "export",
        callback=_export,
        params=[
            click.Argument(["run_id"]),
            *struct_options(ExportRequest),
            click.Option(["--json", "as_json"], is_flag=True, help="Print the API's JSON."),
        ],
        help=_help("Write a save_pretrained folder of the run.", ExportRequest),
    )
)


@runs.command("download")
@click.argument("run_id")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write into (default: ./<run_id>).",
)
@click.option("--file", "files", multiple=True, help="Only this file (repeat); default: every file.")
@json_option
def runs_download(run_id: str, out: Path | None, files: tuple[str, ...], as_json: bool) -> None:
    """Download the run's model folder (each file resumed after an interruption and checked by sha256)."""
    _download_item("models", run_id, out or Path(run_id), list(files))


# ---------------------------------------------------------------- artifacts


@cli.group()
def artifacts() -> None:
    """The files of a tokenizer or a model: list, download."""


KIND = click.Choice(["tokenizers", "models"])


@artifacts.command("list")
@click.argument("kind", type=KIND)
@click.argument("item_id")
@json_option
def artifacts_list(kind: ArtifactKind, item_id: str, as_json: bool) -> None:
    """The item's files with size and sha256."""
    with _client() as client:
        listing = client.list_artifacts(kind, item_id)
    if _as_json():
        _emit(listing)
        return
    table = Table("path", "size", "sha256", "modified_at", title=f"{kind}/{item_id}", title_justify="left")
    for entry in listing.files:
        table.add_row(entry.path, f"{entry.size:,}", entry.sha256, entry.modified_at.isoformat())
    _console().print(table)


@artifacts.command("info")
@click.argument("kind", type=KIND)
@click.argument("item_id")
@click.argument("path")
@json_option
def artifacts_info(kind: ArtifactKind, item_id: str, path: str, as_json: bool) -> None:
    """One file's size, ETag, Last-Modified and type (a HEAD request, no body)."""
    with _client() as client:
        head = client.artifact_info(kind, item_id, path)
    if _as_json():
        _emit(head)
        return
    _console().print(f"{path}  {head.size:,} bytes  {head.media_type}  etag {head.etag}  {head.last_modified}")


@artifacts.command("download")
@click.argument("kind", type=KIND)
@click.argument("item_id")
@click.argument("paths", nargs=-1)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write into (default: ./<item_id>).",
)
@json_option
def artifacts_download(
    kind: ArtifactKind, item_id: str, paths: tuple[str, ...], out: Path | None, as_json: bool
) -> None:
    """Download PATHS of the item (default: every file); an interrupted file resumes where it stopped."""
    _download_item(kind, item_id, out or Path(item_id), list(paths))


def _download_item(kind: ArtifactKind, item_id: str, out: Path, paths: list[str]) -> None:
    console = _console()
    with _client() as client:
        listing = client.list_artifacts(kind, item_id)
        wanted = paths or [entry.path for entry in listing.files]
        with Progress(
            "{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            disable=_as_json(),
        ) as progress:
            for path in wanted:
                target = out / path
                target.parent.mkdir(parents=True, exist_ok=True)
                task = progress.add_task(path, total=None)

                def update(done: int, total: int, task_id: TaskID = task) -> None:
                    progress.update(task_id, completed=done, total=total)

                downloaded = client.download(kind, item_id, path, target, on_progress=update)
                if _as_json():
                    _emit(downloaded)
                else:
                    resumed = f", resumed {downloaded.resumed}x" if downloaded.resumed else ""
                    progress.console.print(f"{downloaded.path}  {downloaded.size:,} bytes  sha256 ok{resumed}")


# ---------------------------------------------------------------- corpora


@cli.group()
def corpora() -> None:
    """Uploaded corpora: upload (with progress), list, show, delete."""


@corpora.command("upload")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-overwrite", is_flag=True, help="Refuse to replace an existing corpus (If-None-Match: *).")
@json_option
def corpora_upload(name: str, path: Path, no_overwrite: bool, as_json: bool) -> None:
    """Upload PATH (.txt, .jsonl, .tar.gz or .zip) as corpus NAME; use NAME as a job's corpus_path."""
    with (
        _client() as client,
        Progress(
            "{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=_console(),
            disable=_as_json(),
        ) as progress,
    ):
        task = progress.add_task(path.name, total=path.stat().st_size)
        info = client.upload_corpus(
            name, path, refuse_overwrite=no_overwrite, on_progress=lambda sent, _: progress.update(task, completed=sent)
        )
    _show_corpus(info)


def _show_corpus(info: CorpusInfo) -> None:
    if _as_json():
        _emit(info)
        return
    console = _console()
    console.print(f"{info.name}: {len(info.files)} file(s), {info.bytes:,} bytes, {info.lines:,} lines", markup=False)
    console.print(f"sha256 {info.sha256}  created {info.created_at.isoformat()}", markup=False)


@corpora.command("list")
@json_option
def corpora_list(as_json: bool) -> None:
    """The uploaded corpora."""
    with _client() as client:
        found = client.list_corpora()
    if _as_json():
        _emit(found)
        return
    table = Table("name", "files", "bytes", "lines", "created")
    for info in found:
        table.add_row(
            info.name, str(len(info.files)), f"{info.bytes:,}", f"{info.lines:,}", info.created_at.isoformat()
        )
    _console().print(table)


@corpora.command("show")
@click.argument("name")
@json_option
def corpora_show(name: str, as_json: bool) -> None:
    """One corpus: its files with sizes and sha256."""
    with _client() as client:
        info = client.get_corpus(name)
    _show_corpus(info)
    if not _as_json():
        for entry in info.files:
            _console().print(f"  {entry.path}  {entry.size:,} bytes  {entry.sha256}", markup=False)


@corpora.command("delete")
@click.argument("name")
@json_option
def corpora_delete(name: str, as_json: bool) -> None:
    """Delete a corpus (refused while a queued or running job reads it)."""
    with _client() as client:
        client.delete_corpus(name)
    _emit({"deleted": name}) if _as_json() else _console().print(f"corpus {name} deleted", markup=False)


# ---------------------------------------------------------------- webhooks


@cli.group()
def webhooks() -> None:
    """Endpoints told when jobs end (signed, Standard Webhooks): create, list, deliveries, redeliver."""


@webhooks.command("create")
@click.argument("url")
@click.option("--event", "events", multiple=True, required=True, type=click.Choice(WEBHOOK_EVENT_TYPES), help="Repeat.")
@click.option("--description", default="", help="A note for you.")
@json_option
def webhooks_create(url: str, events: tuple[WebhookEventType, ...], description: str, as_json: bool) -> None:
    """Register URL for the --event types; prints the signing secret, shown this once."""
    with _client() as client:
        created = client.create_webhook(CreateWebhookRequest(url=url, events=list(events), description=description))
    if _as_json():
        _emit(created)
        return
    _console().print(f"webhook {created.webhook.id} -> {created.webhook.url}")
    _console().print(f"secret (shown once): {created.secret}", markup=False)


@webhooks.command("list")
@json_option
def webhooks_list(as_json: bool) -> None:
    """Every endpoint, newest first."""
    with _client() as client:
        page = client.list_webhooks()
    if _as_json():
        _emit(page)
        return
    table = Table("id", "url", "events", "created_at", title="webhooks", title_justify="left")
    for hook in page.items:
        table.add_row(hook.id, hook.url, ", ".join(hook.events), hook.created_at.isoformat())
    _console().print(table)


@webhooks.command("get")
@click.argument("webhook_id")
@json_option
def webhooks_get(webhook_id: str, as_json: bool) -> None:
    """One endpoint (never its secret)."""
    with _client() as client:
        hook = client.get_webhook(webhook_id)
    _emit(hook) if _as_json() else _console().print(f"{hook.id} {hook.url} {', '.join(hook.events)}")


@webhooks.command("delete")
@click.argument("webhook_id")
@json_option
def webhooks_delete(webhook_id: str, as_json: bool) -> None:
    """Forget an endpoint: nothing more is sent to it."""
    with _client() as client:
        client.delete_webhook(webhook_id)
    _emit({"deleted": webhook_id}) if _as_json() else _console().print(f"webhook {webhook_id} deleted")


@webhooks.command("rotate-secret")
@click.argument("webhook_id")
@json_option
def webhooks_rotate(webhook_id: str, as_json: bool) -> None:
    """A new signing secret, shown once (the previous one also signs for 24 hours)."""
    with _client() as client:
        rotated = client.rotate_webhook_secret(webhook_id)
    _emit(rotated) if _as_json() else _console().print(f"secret (shown once): {rotated.secret}", markup=False)


@webhooks.command("deliveries")
@click.argument("webhook_id")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True, help="How many.")
@json_option
def webhooks_deliveries(webhook_id: str, limit: int, as_json: bool) -> None:
    """The endpoint's deliveries, newest first, with their attempts."""
    with _client() as client:
        page = client.webhook_deliveries(webhook_id, limit)
    if _as_json():
        _emit(page)
        return
    table = Table("id", "event", "status", "attempts", "last", title=webhook_id, title_justify="left")
    for delivery in page.items:
        last = delivery.attempts[-1] if delivery.attempts else None
        outcome = "" if last is None else (last.error or str(last.status_code or last.outcome))
        table.add_row(delivery.id, delivery.event_type, delivery.status, str(len(delivery.attempts)), outcome)
    _console().print(table)


@webhooks.command("redeliver")
@click.argument("webhook_id")
@click.argument("delivery_id")
@json_option
def webhooks_redeliver(webhook_id: str, delivery_id: str, as_json: bool) -> None:
    """Send a delivery's event again, now, with the same webhook-id."""
    with _client() as client:
        delivery = client.redeliver(webhook_id, delivery_id)
    _emit(delivery) if _as_json() else _console().print(f"delivery {delivery.id} {delivery.status}")


# ---------------------------------------------------------------- health


@cli.command("health")
@click.option("--prometheus", is_flag=True, help="Print GET /metrics (Prometheus text) instead.")
@json_option
def health(prometheus: bool, as_json: bool) -> None:
    """Whether the API is alive (/healthz) and ready (/readyz: Redis and a worker of each kind)."""
    with _client() as client:
        if prometheus:
            click.echo(client.prometheus_metrics(), nl=False)
            return
        alive, ready = client.health(), client.ready()
    if _as_json():
        _emit({"healthz": alive, "readyz": ready})
    else:
        console = _console()
        console.print(f"{_settings().url}: alive {alive.status}, ready {ready.status}")
        for reason in ready.reasons:
            console.print(f"  {reason}")
    if ready.status != "ok":
        raise JobEnded(EXIT_FAILED)


# ---------------------------------------------------------------- entry point

# (method, OpenAPI path) -> the mt command that calls it (tests/client checks every operation has one).
COMMANDS: dict[tuple[str, str], str] = {
    ("POST", "/tokenizers/train"): "tokenizers train",
    ("GET", "/tokenizers"): "tokenizers list",
    ("GET", "/tokenizers/{tokenizer_id}"): "tokenizers get",
    ("POST", "/tokenizers/{tokenizer_id}/encode"): "tokenizers encode",
    ("POST", "/tokenizers/{tokenizer_id}/cancel"): "tokenizers cancel",
    ("GET", "/tokenizers/{tokenizer_id}/logs"): "tokenizers logs",
    ("GET", "/tokenizers/{tokenizer_id}/logs/stream"): "tokenizers follow",
    ("POST", "/runs/train"): "runs train",
    ("GET", "/runs"): "runs list",
    ("GET", "/runs/{run_id}"): "runs get",
    ("POST", "/runs/{run_id}/cancel"): "runs cancel",
    ("POST", "/runs/{run_id}/resume"): "runs resume",
    ("GET", "/runs/{run_id}/checkpoints"): "runs checkpoints",
    ("GET", "/runs/{run_id}/metrics"): "runs metrics",
    ("GET", "/runs/{run_id}/logs"): "runs logs",
    ("GET", "/runs/{run_id}/logs/stream"): "runs follow",
    ("POST", "/runs/{run_id}/evaluate"): "runs evaluate",
    ("GET", "/runs/{run_id}/eval"): "runs evals",
    ("GET", "/runs/{run_id}/evals"): "runs evals",
    ("GET", "/runs/{run_id}/evals/{eval_id}"): "runs evals",
    ("POST", "/runs/{run_id}/generate"): "runs generate",
    ("POST", "/runs/{run_id}/export"): "runs export",
    ("GET", "/artifacts/{kind}/{item_id}"): "artifacts list",
    ("GET", "/artifacts/{kind}/{item_id}/download"): "artifacts download",
    ("HEAD", "/artifacts/{kind}/{item_id}/download"): "artifacts info",
    ("GET", "/healthz"): "health",
    ("GET", "/readyz"): "health",
    ("GET", "/metrics"): "health",
    ("PUT", "/corpora/{name}"): "corpora upload",
    ("GET", "/corpora"): "corpora list",
    ("GET", "/corpora/{name}"): "corpora show",
    ("DELETE", "/corpora/{name}"): "corpora delete",
    ("POST", "/webhooks"): "webhooks create",
    ("GET", "/webhooks"): "webhooks list",
    ("GET", "/webhooks/{webhook_id}"): "webhooks get",
    ("DELETE", "/webhooks/{webhook_id}"): "webhooks delete",
    ("POST", "/webhooks/{webhook_id}/rotate-secret"): "webhooks rotate-secret",
    ("GET", "/webhooks/{webhook_id}/deliveries"): "webhooks deliveries",
    ("POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): "webhooks redeliver",
}


def _report(error: ClientError) -> int:
    Console(stderr=True, highlight=False).print(f"mt: {error}", markup=False)
    if isinstance(error, Unreachable):
        return EXIT_UNREACHABLE
    if isinstance(error, BadRequest):
        return EXIT_USAGE
    if isinstance(error, ApiError):
        return EXIT_FAILED
    return EXIT_FAILED


def run(args: list[str] | None = None) -> int:
    """Run ``mt`` with ``args`` (default: ``sys.argv[1:]``); the exit code."""
    try:
        # Outside standalone mode, click returns the code of an Exit raised by a command.
        code = cli.main(args=args, prog_name="mt", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return EXIT_DETACHED
    except ClientError as exc:
        return _report(exc)
    except KeyboardInterrupt:
        return EXIT_DETACHED
    return code if isinstance(code, int) else EXIT_OK


def main() -> None:
    """The ``mt`` console script."""
    sys.exit(run())


__all__ = [
    "COMMANDS",
    "EXIT_DETACHED",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "cli",
    "main",
    "run",
]
