"""What ``mt`` shows a person: the live view of a followed job (a progress bar with step / total, loss,
validation loss, tokens/s and ETA, log lines above it), summary tables, and loss plots."""

from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from mt_contracts.events import CheckpointEvent, JobEvent, LogEvent, ProgressEvent, StatusEvent, ValidationEvent
from mt_contracts.jobs import RunJob, RunSeries, TokenizerJob


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class FollowView:
    """The live view of one job; ``show(event)`` for each event received, in order."""

    def __init__(self, console: Console, job_id: str) -> None:
        self.console = console
        self.job_id = job_id
        self.status: str | None = None
        # A tokenizer job sends no progress events: a spinner and the elapsed time, no empty bar.
        training = (
            [
                BarColumn(),
                TextColumn("step {task.fields[step]}"),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("val {task.fields[val]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TextColumn("ETA {task.fields[eta]}"),
            ]
            if job_id.startswith("run_")
            else []
        )
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            *training,
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=4,
        )
        self._task: TaskID = self._progress.add_task(
            job_id, total=None, step="-/-", loss="-", val="-", tps="-", eta="-"
        )

    def __enter__(self) -> FollowView:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def show(self, event: JobEvent) -> None:
        """Update the bar from a progress or validation event; print log, checkpoint and status lines."""
        clock = event.ts[11:19]
        match event:
            case ProgressEvent(progress=progress):
                self._progress.update(
                    self._task,
                    total=progress.max_steps,
                    completed=progress.step,
                    step=f"{progress.step}/{progress.max_steps}",
                    loss=f"{progress.train_loss:.4f}",
                    tps=f"{progress.tokens_per_second:,.0f}",
                    eta=_eta(progress.eta_seconds),
                )
            case ValidationEvent(point=point):
                self._progress.update(self._task, val=f"{point.val_loss:.4f}")
                self.console.print(
                    f"[dim]{clock}[/] validation at step {point.step}: val_loss {point.val_loss:.4f}, "
                    f"val_perplexity {point.val_perplexity:.2f}"
                )
            case CheckpointEvent(checkpoint=checkpoint):
                self.console.print(f"[dim]{clock}[/] checkpoint at step {checkpoint.step} ({checkpoint.path})")
            case StatusEvent(status=status, error=error):
                self.status = status
                detail = f": {error.code}: {error.message}" if error is not None else ""
                colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(status, "cyan")
                self.console.print(f"[dim]{clock}[/] status [{colour}]{status}[/]{detail}")
                if status == "succeeded":
                    task = self._progress.tasks[0]
                    self._progress.update(self._task, completed=task.total or 1, total=task.total or 1)
            case LogEvent(message=message, level=level):
                colour = {"error": "red", "warning": "yellow"}.get(level, "default")
                self.console.print(f"[dim]{clock}[/] [{colour}]{message or event.event}[/]")


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in rows:
        table.add_row(name, value)
    return table


def _job_rows(status: str, attempts: int, created: str, finished: str | None) -> list[tuple[str, str]]:
    return [("status", status), ("attempts", str(attempts)), ("created_at", created), ("finished_at", finished or "-")]


def run_table(run: RunJob) -> Table:
    """A run's summary: status, budget, progress or final metrics, where its files are."""
    rows = _job_rows(
        run.status, run.attempts, run.created_at.isoformat(), run.finished_at.isoformat() if run.finished_at else None
    )
    rows.append(("tokenizer_id", run.request.tokenizer_id))
    if run.metrics is not None:
        metrics = run.metrics
        rows += [
            ("steps", str(metrics.steps)),
            ("train_loss", f"{metrics.train_loss:.4f}"),
            ("val_loss", f"{metrics.val_loss:.4f}"),
            ("val_perplexity", f"{metrics.val_perplexity:.2f}"),
            ("val_bits_per_byte", f"{metrics.val_bits_per_byte:.4f}"),
            ("tokens_seen", f"{metrics.tokens_seen:,}"),
            ("n_params", f"{metrics.n_params:,}"),
            ("training_seconds", f"{metrics.training_seconds:.1f}"),
        ]
    elif run.progress is not None:
        rows += [
            ("step", f"{run.progress.step}/{run.progress.max_steps}"),
            ("train_loss", f"{run.progress.train_loss:.4f}"),
            ("tokens_per_second", f"{run.progress.tokens_per_second:,.0f}"),
        ]
    if run.last_eval is not None and run.metrics is None:
        rows.append(("val_loss", f"{run.last_eval.val_loss:.4f} (step {run.last_eval.step})"))
    if run.checkpoint is not None:
        rows.append(("checkpoint", f"step {run.checkpoint.step}"))
    if run.artifact_dir is not None:
        rows.append(("artifact_dir", run.artifact_dir))
    if run.error is not None:
        rows.append(("error", f"{run.error.code}: {run.error.message}"))
    return _table(f"run {run.id}", rows)


def tokenizer_table(job: TokenizerJob) -> Table:
    """A tokenizer job's summary: status, method, learned vocabulary, statistics."""
    rows = _job_rows(
        job.status, job.attempts, job.created_at.isoformat(), job.finished_at.isoformat() if job.finished_at else None
    )
    rows += [("method", job.request.method), ("corpus_path", job.request.corpus_path)]
    if job.result is not None:
        result = job.result
        rows += [
            ("vocab_size", str(result.vocab_size)),
            ("corpus_bytes", f"{result.corpus_bytes:,}"),
            ("training_seconds", f"{result.training_seconds:.2f}"),
            ("artifact_dir", result.artifact_dir),
        ]
        heldout = result.statistics.heldout if result.statistics is not None else None
        if heldout is not None:
            rows.append(("bytes_per_token", f"{heldout.bytes_per_token:.3f}"))
    if job.error is not None:
        rows.append(("error", f"{job.error.code}: {job.error.message}"))
    return _table(f"tokenizer {job.id}", rows)


def terminal_plot(series: RunSeries, width: int, height: int) -> str:
    """The training and validation loss by step, drawn with plotext as text."""
    import plotext

    plotext.clear_figure()
    plotext.plotsize(width, height)
    plotext.theme("clear")
    if series.train:
        plotext.plot([p.step for p in series.train], [p.train_loss for p in series.train], label="train_loss")
    if series.val:
        plotext.plot([p.step for p in series.val], [p.val_loss for p in series.val], label="val_loss", marker="x")
    plotext.title("loss (nats per token)")
    plotext.xlabel("step")
    return plotext.build()


def png_plot(series: RunSeries, path: Path, title: str) -> None:
    """The same curves written as a PNG with matplotlib (no display needed)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.add_subplot()
    if series.train:
        axes.plot([p.step for p in series.train], [p.train_loss for p in series.train], label="train_loss")
    if series.val:
        axes.plot([p.step for p in series.val], [p.val_loss for p in series.val], "o-", label="val_loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(title)
    axes.legend()
    figure.savefig(path, format="png")
