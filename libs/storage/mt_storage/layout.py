"""The one place that spells where each artifact lives.

::

    <artifacts_root>/tokenizers/<tokenizer_id>/{tokenizer.json, tokenizer_config.json,
                                                special_tokens_map.json, manifest.json, logs.jsonl}
    <artifacts_root>/models/<run_id>/{config.json, generation_config.json, model.safetensors,
                                      tokenizer.json, ..., manifest.json, logs.jsonl}
    <artifacts_root>/models/<run_id>/eval/{<eval_id>.json, metrics.json (the latest)}
    <artifacts_root>/models/<run_id>/export/step-<n>/{the save_pretrained files, manifest.json}
    <runs_root>/datasets/<key>/{train.bin, val.bin, prepared.json}
    <runs_root>/<run_id>/{spec.json, manifest.json, process.log, checkpoints.json,
                          checkpoints/, config.json (the model's HF config), work/}
    <runs_root>/<run_id>/evals/{<eval_id>.spec.json, <eval_id>.log}
    <runs_root>/tokenizers/<tokenizer_id>/process.log
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from mt_contracts.settings import AppSettings

MANIFEST = "manifest.json"
LOGS = "logs.jsonl"


class Layout(msgspec.Struct, frozen=True):
    """Absolute artifact and run roots; every path below them is derived here."""

    artifacts_root: Path
    runs_root: Path
    corpus_root: Path

    @classmethod
    def from_settings(cls, app: AppSettings) -> Layout:
        """Resolve the configured roots to absolute paths (relative ones against the working directory)."""
        return cls(
            artifacts_root=Path(app.artifacts_root).resolve(),
            runs_root=Path(app.runs_root).resolve(),
            corpus_root=Path(app.corpus_root).resolve(),
        )

    def roots(self) -> dict[str, str]:
        """The roots by the setting that names them, for messages that give paths relative to a root."""
        return {
            "APP__RUNS_ROOT": str(self.runs_root),
            "APP__ARTIFACTS_ROOT": str(self.artifacts_root),
            "APP__CORPUS_ROOT": str(self.corpus_root),
        }

    def tokenizer_dir(self, tokenizer_id: str) -> Path:
        return self.artifacts_root / "tokenizers" / tokenizer_id

    def model_dir(self, run_id: str) -> Path:
        return self.artifacts_root / "models" / run_id

    def tokenizer_logs(self, tokenizer_id: str) -> Path:
        return self.tokenizer_dir(tokenizer_id) / LOGS

    def run_logs(self, run_id: str) -> Path:
        return self.model_dir(run_id) / LOGS

    def run_dir(self, run_id: str) -> Path:
        return self.runs_root / run_id

    def run_spec(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "spec.json"

    def run_manifest(self, run_id: str) -> Path:
        return self.run_dir(run_id) / MANIFEST

    def run_process_log(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "process.log"

    def tokenizer_process_log(self, tokenizer_id: str) -> Path:
        """The stderr of a tokenizer job's training processes."""
        return self.runs_root / "tokenizers" / tokenizer_id / "process.log"

    def dataset_cache(self) -> Path:
        """Prepared token files, keyed by corpus and tokenizer digests (shared by runs)."""
        return self.runs_root / "datasets"

    def run_work_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "work"

    def eval_dir(self, run_id: str) -> Path:
        """Evaluation results of a run: ``<eval_id>.json`` each, ``metrics.json`` the latest."""
        return self.model_dir(run_id) / "eval"

    def eval_result(self, run_id: str, eval_id: str) -> Path:
        return self.eval_dir(run_id) / f"{eval_id}.json"

    def eval_latest(self, run_id: str) -> Path:
        return self.eval_dir(run_id) / "metrics.json"

    def eval_spec(self, run_id: str, eval_id: str) -> Path:
        return self.run_dir(run_id) / "evals" / f"{eval_id}.spec.json"

    def eval_process_log(self, run_id: str, eval_id: str) -> Path:
        return self.run_dir(run_id) / "evals" / f"{eval_id}.log"

    def export_dir(self, run_id: str, step: int) -> Path:
        """The ``save_pretrained`` folder of checkpoint ``step``."""
        return self.model_dir(run_id) / "export" / f"step-{step}"
