"""The Dockerfile and .dockerignore, read as text (no Docker engine here): stages, user, the torch pin and
the settings keys the image sets."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib

from tests.deploy.manifests import ROOT, settings_keys

Instruction = tuple[str, str]


def _instructions() -> list[Instruction]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments))
            pending = ""
    return instructions


def _stages() -> dict[str, list[Instruction]]:
    """Instructions per stage, by the stage's ``AS`` name."""
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for keyword, arguments in _instructions():
        if keyword == "FROM":
            current = stages.setdefault(arguments.split()[-1], [])
        current.append((keyword, arguments))
    return stages


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_final_stage_copies_the_environment_runs_as_a_non_root_user_and_has_no_build_tools() -> None:
    stages = _stages()
    assert list(stages) == ["build", "runtime"]
    runtime = stages["runtime"]
    text = "\n".join(arguments for _, arguments in runtime)
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    assert not re.search(r"build-essential|\bgcc\b|\bg\+\+|\bmake\b|\bpip install\b", text)
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert [arguments for keyword, arguments in runtime if keyword == "CMD"] == ['["python", "-m", "mt_api"]']
    assert "build-essential" in "\n".join(arguments for _, arguments in stages["build"])


def test_torch_pin_is_pyprojects_and_comes_from_the_cpu_index() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dependencies: list[str] = pyproject["project"]["dependencies"]
    (torch,) = [dependency for dependency in dependencies if dependency.startswith("torch==")]
    build = "\n".join(arguments for _, arguments in _stages()["build"])
    assert f'pip install --index-url "$TORCH_INDEX_URL" {torch}' in build
    assert _env(_stages()["build"]) == {
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PATH": "/opt/venv/bin:$PATH",
    }


def test_image_sets_only_real_settings_keys_and_writable_caches() -> None:
    env = _env(_stages()["runtime"])
    settings = {name for name in env if "__" in name}
    assert settings <= settings_keys(), sorted(settings - settings_keys())
    assert env["HTTP__HOST"] == "0.0.0.0"
    assert env["HF_HOME"].startswith(env["HOME"] + "/.cache")


def test_dockerignore_keeps_local_state_out_and_the_sources_in() -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    assert {".env", ".venv", ".data", ".git", "corpus"} <= set(patterns)
    copied = ["pyproject.toml", "README.md", "libs", "services"]
    assert [name for name in copied if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)] == []
    sources = {
        source for keyword, arguments in _stages()["build"] if keyword == "COPY" for source in arguments.split()[:-1]
    }
    assert sources == set(copied)
