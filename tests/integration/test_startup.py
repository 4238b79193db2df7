"""Start-up failures end in one line that names the variable to fix and a non-zero exit, never a traceback:
a misspelt setting (every service) and an unreachable Redis (the workers), run as the real entry points."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mt_storage.embedded_redis import free_port

SERVICES = ("mt_api", "mt_tokenizer_worker", "mt_trainer_worker")


def _run(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("module", SERVICES)
def test_a_misspelt_setting_is_one_line_naming_the_nearest_valid_one(module: str) -> None:
    result = _run(module, {"APP__CORPUS_RUT": "x"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"{module}: APP__CORPUS_RUT is not a setting: did you mean APP__CORPUS_ROOT?"
        " (.env.example lists every setting)\n"
    )


@pytest.mark.parametrize("module", SERVICES[1:])
def test_a_worker_without_redis_says_so_in_one_line(module: str) -> None:
    port = free_port()  # nothing listens there
    result = _run(module, {"REDIS__URL": f"redis://user:secret-password@127.0.0.1:{port}/3"})
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "secret-password" not in result.stderr
    assert result.stderr.startswith(f"{module}: cannot reach Redis at 127.0.0.1:{port}/3 (REDIS__URL): ")
    assert result.stderr.count("\n") == 1
