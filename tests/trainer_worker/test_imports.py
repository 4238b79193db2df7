"""torch and transformers load only in the training subprocess, never in the worker or the gateway."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["mt_trainer_worker.worker", "mt_tokenizer_worker.worker", "mt_api.app"])
def test_service_processes_do_not_import_training_libraries(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
