"""``mt`` as a person and a script use it, through the real stack: the CLI runs as a child process (under a
pseudo-terminal where what a person sees is checked), ``--json`` output decodes into the contract types,
Ctrl-C detaches without cancelling, and a download cut mid-body resumes."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from mt_client import AsyncClient, Downloaded
from mt_client.cli import EXIT_DETACHED, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from mt_client.models import Health
from mt_contracts import codec
from mt_contracts.events import JobEvent, StatusEvent, decode_job_event
from mt_contracts.generation import GenerateResponse
from mt_contracts.jobs import CheckpointInfo, JobAccepted, RunJob, RunSeries, TokenizerJob
from mt_contracts.settings import ApiSettings, GatewaySettings, WorkerServiceSettings
from mt_storage.embedded_redis import free_port
from tests.client.stack import MT, Rule, in_terminal, mt, proxy_to, serving
from tests.client.test_client import RUN
from tests.helpers import running_workers, wait_for


class HealthAnswer(msgspec.Struct, frozen=True):
    healthz: Health
    readyz: Health


RUN_OPTIONS = [f"--{name}={value}" for name, value in RUN.items()]


@pytest.fixture
async def server(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[str]:
    settings = msgspec.structs.replace(api_settings, api=GatewaySettings(keepalive_seconds=0.3))
    async with serving(settings) as url:
        yield url


def _json_lines(stdout: str) -> tuple[JobAccepted, list[JobEvent]]:
    first, *rest = stdout.strip().splitlines()
    return codec.decode(first, JobAccepted), [decode_job_event(line.encode()) for line in rest]


async def test_train_follow_fetch_generate(server: str, worker_settings: WorkerServiceSettings, tmp_path: Path) -> None:
    async with running_workers(worker_settings) as _, proxy_to(server) as proxy:
        trained = await mt(server, "tokenizers", "train", "--corpus_path", "small.txt", "--vocab_size", "300", "--json")
        assert trained.code == EXIT_OK, trained.stderr
        accepted, events = _json_lines(trained.stdout)
        assert accepted.id.startswith("tok_") and accepted.location == f"/tokenizers/{accepted.id}"
        assert isinstance(events[-1], StatusEvent) and events[-1].status == "succeeded"
        assert {event.job_id for event in events} == {accepted.id}
        tokenizer = codec.decode((await mt(server, "tokenizers", "get", accepted.id, "--json")).stdout, TokenizerJob)
        assert tokenizer.status == "succeeded" and tokenizer.result is not None

        queued = await mt(
            server, "runs", "train", "--tokenizer_id", tokenizer.id, *RUN_OPTIONS, "--max_steps", "40", "--detach"
        )
        assert queued.code == EXIT_OK, queued.stderr
        run_id = queued.stdout.strip()
        assert re.fullmatch(r"run_[0-9A-Z]{26}", run_id)
        assert f"run {run_id} queued" in queued.stderr

        # What a person sees following it in a terminal: the bar's last state and the summary table.
        code, seen = await asyncio.to_thread(in_terminal, [MT, "--url", server, "runs", "follow", run_id])
        assert code == EXIT_OK, seen
        assert "step 40/40" in seen
        assert re.search(r"loss \d+\.\d{4}", seen) and re.search(r"val \d+\.\d{4}", seen)
        assert re.search(r"[\d,]+ tok/s", seen) and "ETA " in seen
        assert "status succeeded" in seen
        assert f"run {run_id}" in seen
        run = codec.decode((await mt(server, "runs", "get", run_id, "--json")).stdout, RunJob)
        assert run.status == "succeeded" and run.metrics is not None
        assert re.search(rf"val_loss\s*│\s*{run.metrics.val_loss:.4f}", seen), seen[-2000:]
        assert re.search(rf"steps\s*│\s*{run.metrics.steps}", seen)

        series = codec.decode((await mt(server, "runs", "metrics", run_id, "--json")).stdout, RunSeries)
        assert series.train[-1].step == 40 and series.val
        plotted = await mt(server, "runs", "metrics", run_id, "--plot")
        assert plotted.code == EXIT_OK and "train_loss" in plotted.stdout and "val_loss" in plotted.stdout
        png = tmp_path / "loss.png"
        assert (await mt(server, "runs", "metrics", run_id, "--png", str(png))).code == EXIT_OK
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        kept = codec.decode((await mt(server, "runs", "checkpoints", run_id, "--json")).stdout, list[CheckpointInfo])
        assert [item.step for item in kept] == [20, 40]

        sampled = await mt(
            server, "runs", "generate", run_id, "--prompt", "ROMEO:", "--max_new_tokens", "8", "--seed", "7", "--json"
        )
        assert sampled.code == EXIT_OK, sampled.stderr
        generated = codec.decode(sampled.stdout, GenerateResponse)
        assert generated.seed == 7 and generated.step == 40 and len(generated.samples) == 1
        assert generated.samples[0].tokens <= 8

        # The model folder through a proxy that cuts model.safetensors after 10,000 bytes: resumed.
        proxy.rules.append(Rule(match="/download?path=model.safetensors", after=10_000))
        out = tmp_path / "model"
        fetched = await mt(proxy.url, "runs", "download", run_id, "--out", str(out), "--json")
        assert fetched.code == EXIT_OK, fetched.stderr
        async with AsyncClient(server) as client:
            listing = await client.list_artifacts("models", run_id)
        results = {Path(d.path).name: d for d in (codec.decode(line, Downloaded) for line in fetched.stdout.split())}
        assert sorted(results) == sorted(Path(entry.path).name for entry in listing.files)
        for entry in listing.files:
            assert hashlib.sha256((out / entry.path).read_bytes()).hexdigest() == entry.sha256
        assert results["model.safetensors"].resumed == 1 and proxy.cuts == 1
        assert "range: bytes=" in proxy.heads_with("/download?path=model.safetensors")[1]


async def test_ctrl_c_detaches_and_exit_codes(server: str, worker_settings: WorkerServiceSettings) -> None:
    async with running_workers(worker_settings) as _, AsyncClient(server) as client:
        trained = await mt(server, "tokenizers", "train", "--corpus_path", "small.txt", "--vocab_size", "300", "--json")
        tokenizer_id = _json_lines(trained.stdout)[0].id
        argv = [MT, "--url", server, "runs", "train", "--tokenizer_id", tokenizer_id, *RUN_OPTIONS]
        code, seen = await asyncio.to_thread(
            in_terminal,
            [*argv, "--max_steps", "1000000", "--compile", "off"],
            interrupt_when=lambda screen: re.search(r"step [1-9]\d*/1000000", screen) is not None,
        )
        assert code == EXIT_DETACHED, seen
        run_id = re.findall(r"run (run_[0-9A-Z]{26}) queued", seen)[0]
        assert f"detached from run {run_id}: the run goes on; `mt runs follow {run_id}` reattaches" in seen
        run = await client.get_run(run_id)
        assert run.status == "running"

        cancelled = await mt(server, "runs", "cancel", run_id, "--json")
        assert codec.decode(cancelled.stdout, RunJob).status in {"cancelling", "cancelled"}
        followed = await mt(server, "runs", "follow", run_id, "--json")
        assert followed.code == EXIT_FAILED  # the run ended cancelled
        last = decode_job_event(followed.stdout.strip().splitlines()[-1].encode())
        assert isinstance(last, StatusEvent) and last.status == "cancelled"

        async def status() -> str:
            return (await client.get_run(run_id)).status

        await wait_for(status, lambda value: value == "cancelled", 60)

        missing = await mt(server, "runs", "get", "run_01HZY7V3J9T6S4W0XKQ0A1B2C3")
        assert missing.code == EXIT_FAILED and "404 Not Found: no run run_01HZY7V3J9T6S4W0XKQ0A1B2C3" in missing.stderr
        refused = await mt(server, "tokenizers", "train", "--corpus_path", "missing.txt", "--detach")
        assert refused.code == 2 and "corpus_path" in refused.stderr
        nowhere = await mt(f"http://127.0.0.1:{free_port()}", "--retries", "0", "health")
        assert nowhere.code == EXIT_UNREACHABLE and "does not answer" in nowhere.stderr
        health = await mt(server, "health", "--json")
        answer = msgspec.json.decode(health.stdout, type=HealthAnswer)
        assert answer.healthz == Health(status="ok")
        assert health.code == (EXIT_OK if answer.readyz.status == "ok" else EXIT_FAILED)
