from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from mt_contracts.settings import ApiSettings, RedisSettings, SettingsError, WorkerServiceSettings, from_env


def test_nested_keys_are_joined_by_double_underscore_and_converted() -> None:
    settings = from_env(
        ApiSettings,
        {"REDIS__URL": "redis://10.0.0.1:6380/2", "HTTP__PORT": "9001", "APP__RUNS_ROOT": "/data/runs", "PATH": "/bin"},
    )
    assert settings.redis.url == "redis://10.0.0.1:6380/2"
    assert settings.http.port == 9001
    assert settings.app.runs_root == "/data/runs"
    assert settings.app.artifacts_root == ".data/artifacts"


def test_redis_password_joins_the_url_and_never_shows_in_repr() -> None:
    settings = from_env(ApiSettings, {"REDIS__URL": "redis://redis:6379/0", "REDIS__PASSWORD": "p@ss/w:rd"})
    assert settings.redis.dsn == "redis://:p%40ss%2Fw%3Ard@redis:6379/0"
    assert "p@ss" not in repr(settings) and "p%40ss" not in repr(settings)
    # The setting overrides a password in the URL, keeps its user name, and is absent by default.
    with_user = RedisSettings(url="redis://app:old@redis:6379/1", password="new")
    assert with_user.dsn == "redis://app:new@redis:6379/1"
    assert "old" not in repr(with_user) and "new" not in repr(with_user)
    assert RedisSettings(url="redis://redis:6379/0").dsn == "redis://redis:6379/0"
    # Nor do API keys or the object store's secret.
    secrets = from_env(
        ApiSettings, {"API__KEYS": "key-one,key-two", "STORAGE__S3_SECRET_ACCESS_KEY": "s3-secret-value"}
    )
    assert "key-one" not in repr(secrets) and "s3-secret-value" not in repr(secrets)
    assert "keys=2" in repr(secrets)


def test_sections_a_service_does_not_declare_are_ignored() -> None:
    settings = from_env(ApiSettings, {"WORKER__POLL_DELAY": "oops"})
    assert settings == ApiSettings()


def test_unknown_key_in_a_declared_section_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="APP__ARTIFACT_ROOT is not a setting"):
        from_env(WorkerServiceSettings, {"APP__ARTIFACT_ROOT": "/x"})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "APP__CORPUS_RUT",
            "APP__CORPUS_RUT is not a setting: did you mean APP__CORPUS_ROOT? (.env.example lists every setting)",
        ),
        (
            "app__artifact_root",
            "app__artifact_root is not a setting: did you mean APP__ARTIFACTS_ROOT? (.env.example lists every setting)",
        ),
        (
            "HTTP__NOTHING_ALIKE",
            "HTTP__NOTHING_ALIKE is not a setting: the HTTP settings are HTTP__HOST, HTTP__PORT "
            "(.env.example lists every setting)",
        ),
    ],
)
def test_a_misspelt_setting_names_the_variable_and_the_nearest_valid_one(name: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        from_env(ApiSettings, {name: "x"})
    assert str(info.value) == message


def test_wrong_type_names_the_variable() -> None:
    with pytest.raises(SettingsError) as info:
        from_env(WorkerServiceSettings, {"WORKER__POLL_DELAY": "soon"})
    assert str(info.value) == (
        "invalid settings from the environment: WORKER__POLL_DELAY='soon': Expected `float`, got `str`"
    )


def test_env_example_documents_every_key_with_its_default() -> None:
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    documented: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.removeprefix("# ").strip().partition("=")
        if sep and name.isupper() and "__" in name and " " not in name:
            documented[name] = value

    expected: dict[str, str] = {}
    for settings_type in (ApiSettings, WorkerServiceSettings):
        for section in msgspec.structs.fields(settings_type):
            default = section.default
            assert isinstance(default, msgspec.Struct)
            for field in msgspec.structs.fields(default):
                expected[f"{section.name}__{field.name}".upper()] = str(getattr(default, field.name))
    assert sorted(documented) == sorted(expected)
    for name, value in documented.items():
        assert _same(value, expected[name]), (name, value, expected[name])


def _same(documented: str, default: str) -> bool:
    try:
        return float(documented) == float(default)
    except ValueError:
        return documented == default
