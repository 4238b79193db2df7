"""Service settings as frozen msgspec Structs, built once from an environment mapping.

Nested keys are joined by ``__``: ``REDIS__URL`` sets ``settings.redis.url`` and ``APP__RUNS_ROOT`` sets
``settings.app.runs_root``. Only the sections a service declares are read; inside a declared section an
unknown key is an error, so a typo such as ``APP__ARTIFACT_ROOT`` fails at start-up instead of being ignored.

Errors::

    SettingsError    a key is unknown (the message names the variable and the nearest valid one), or a value
                     does not convert to the declared type (the message names the variable and its value)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


class SettingsError(ValueError):
    """The environment does not describe valid settings; the message names the variable."""


class RedisSettings(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
):
    """Where job records and queues live. ``url`` is a redis:// DSN; ``password`` (kept apart from the URL so
    that a ConfigMap can hold the URL and a Secret the password) is sent with ``AUTH`` when not empty, and
    overrides a password written in the URL. Connect with ``dsn``, never ``url``."""

    url: str = "redis://127.0.0.1:6379/0"
    password: str = ""

    @property
    def dsn(self) -> str:
        """``url`` with ``password`` in its authority (``redis://:<password>@host:port/db``) when one is set."""
        if not self.password:
            return self.url
        parts = urlsplit(self.url)
        user = quote(parts.username or "", safe="")
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{user}:{quote(self.password, safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def __repr__(self) -> str:
        return f"RedisSettings(url={redact_url(self.url)!r}, password={'***' if self.password else ''!r})"


def redact_url(url: str) -> str:
    """``url`` with any password in its authority replaced by ``***`` (for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


class AppSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Filesystem roots. ``corpus_root`` holds user corpora (read-only to the service); ``artifacts_root``
    holds finished tokenizers and models; ``runs_root`` holds run specs, manifests, checkpoints and process
    logs. A running run whose last heartbeat is older than ``stall_after_seconds`` shows as ``stalled``, and
    the trainer workers' reaper takes it back (resume from its checkpoint, or ``worker_lost``)."""

    artifacts_root: str = ".data/artifacts"
    runs_root: str = ".data/runs"
    corpus_root: str = "corpus"
    log_level: str = "INFO"
    stall_after_seconds: float = 60.0


class StorageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where artifacts are kept beyond this machine.

    ``backend`` ``local`` (the default): the filesystem roots of ``AppSettings`` are the storage, shared by
    every service through one volume (compose's named volumes, a ReadWriteMany claim). ``s3``: an
    S3-compatible object store (MinIO, Ceph RGW, AWS S3, GCS interoperability) holds every finished artifact
    folder, checkpoint, log and prepared dataset under ``s3_prefix`` in ``s3_bucket``; the local roots become
    each service's working copy and cache. ``s3_endpoint_url`` is empty for AWS; ``s3_access_key_id`` and
    ``s3_secret_access_key`` empty use the client's own credential chain (environment, web identity, instance
    profile). ``s3_addressing_style`` is ``path`` (MinIO, Ceph) or ``virtual`` (AWS, GCS).
    ``cache_max_bytes`` bounds what the local roots keep of the store (tokenizers, models, runs, uploaded
    corpora; bytes, 0: no bound): past it, whole folders that no running job holds and whose every file the
    store has are removed, least recently used first."""

    backend: Literal["local", "s3"] = "local"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_addressing_style: Literal["path", "virtual"] = "path"
    cache_max_bytes: int = 0

    def __repr__(self) -> str:
        secret = "***" if self.s3_secret_access_key else ""
        return (
            f"StorageSettings(backend={self.backend!r}, s3_bucket={self.s3_bucket!r}, "
            f"s3_prefix={self.s3_prefix!r}, s3_endpoint_url={self.s3_endpoint_url!r}, "
            f"s3_secret_access_key={secret!r})"
        )


class QueueSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """arq queue names, one per worker kind."""

    tokenizer: str = "mt:queue:tokenizer"
    training: str = "mt:queue:training"
    webhooks: str = "mt:queue:webhooks"


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the API listens."""

    host: str = "127.0.0.1"
    port: int = 8000


class WorkerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Job semantics shared by both worker kinds.

    ``poll_delay`` is seconds between queue polls (arq's 0.5 s default added ~276 ms of median start
    latency here; 0.05 s cut it to ~18 ms). ``health_check_interval`` is seconds between health-key writes;
    the API's readiness check requires a fresh key. ``tokenizer_job_timeout``, ``training_job_timeout`` and
    ``eval_job_timeout`` are seconds; ``max_tries`` counts runs of one job including the first (a retry follows
    a lost worker). ``warm_child`` keeps one child process started ahead of the next job, its libraries
    already imported (``mt_storage.warm``), so a job's work starts without waiting for torch's import.
    """

    poll_delay: float = 0.05
    health_check_interval: int = 5
    tokenizer_job_timeout: int = 6 * 3600
    training_job_timeout: int = 7 * 24 * 3600
    eval_job_timeout: int = 6 * 3600
    max_tries: int = 2
    max_jobs: int = 1
    shutdown_grace: float = 30.0
    heartbeat_interval: float = 5.0
    progress_interval: float = 2.0
    niceness: int = 10
    warm_child: bool = True


class LauncherSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a trainer worker's machine offers the launchers of ``mt_trainer_worker.launchers``.

    ``max_nproc_per_node`` caps a run's ``nproc_per_node`` (0: this machine's CPU cores, or its GPUs with
    CUDA). ``rendezvous_host`` is the address other nodes reach this worker at when a ``torchrun`` run on
    several nodes takes it (the first worker hosts the rendezvous on a free port); ``socket_ifname``, when set,
    names the network interface gloo and NCCL use (``GLOO_SOCKET_IFNAME``, ``NCCL_SOCKET_IFNAME``);
    ``rendezvous_timeout`` is seconds to wait for every node. ``k8s_*`` configure ``k8s-trainjob``: the API
    server (empty: the in-cluster ``https://kubernetes.default.svc``), the service account token and CA
    files (a token path that does not exist sends no token), the namespace, the trainer image, the Kubeflow Trainer
    runtime, the persistent volume claim holding the shared roots and where it is mounted.
    """

    max_nproc_per_node: int = 0
    rendezvous_host: str = "127.0.0.1"
    socket_ifname: str = ""
    rendezvous_timeout: float = 600.0
    k8s_api_url: str = ""
    k8s_token_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    k8s_ca_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    k8s_namespace: str = "model-trainer"
    k8s_image: str = "model-trainer:latest"
    k8s_runtime: str = "torch-distributed"
    k8s_data_claim: str = "model-trainer-data"
    k8s_data_mount: str = "/data"
    k8s_poll_seconds: float = 2.0


class GatewaySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Access and live streams of the HTTP gateway.

    ``keys`` is a comma-separated list of API keys; when it (or ``read_only_keys``) is not empty every
    endpoint except ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <key>``. ``read_only_keys``
    may only read (``GET``, ``HEAD``, live streams): a dashboard's key. ``keepalive_seconds`` is the gap
    after which an idle live stream (SSE or WebSocket) sends a keep-alive. ``cors_origins`` is a
    comma-separated allow-list of origins (``https://ui.example``) whose pages may call the API; empty (the
    default) sends no CORS headers, so browsers keep other sites' pages from reading answers or sending JSON.
    """

    keys: str = ""
    read_only_keys: str = ""
    keepalive_seconds: float = 15.0
    cors_origins: str = ""

    @property
    def cors_origin_list(self) -> list[str]:
        """The origins allowed to call the API from a browser page (CORS), blanks dropped; none by default."""
        return _split_keys(self.cors_origins)

    def __repr__(self) -> str:
        counts = f"keys={len(self.key_list)}, read_only_keys={len(self.read_only_key_list)}"
        return f"GatewaySettings({counts}, keepalive_seconds={self.keepalive_seconds!r})"

    @property
    def key_list(self) -> list[str]:
        """The configured keys, blanks dropped."""
        return _split_keys(self.keys)

    @property
    def read_only_key_list(self) -> list[str]:
        """The configured read-only keys, blanks dropped."""
        return _split_keys(self.read_only_keys)


def _split_keys(value: str) -> list[str]:
    return [key.strip() for key in value.split(",") if key.strip()]


class InferenceSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The gateway's inference processes (text generation, checkpoint export), children that load torch so
    the gateway never does. ``processes`` run at once, each keeping up to ``cache_size`` models loaded;
    a call waits at most ``timeout`` seconds (the first call also pays the import of torch). ``niceness``
    is added to their CPU priority so the gateway's event loop stays responsive; ``threads`` is each one's
    torch intra-op threads."""

    processes: int = 1
    cache_size: int = 4
    timeout: float = 120.0
    niceness: int = 5
    threads: int = 1


class CorpusSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits of ``PUT /corpora/{name}``: ``max_upload_bytes`` of the body as sent (an archive compressed),
    ``max_expanded_bytes`` of the files an archive expands to, ``max_files`` files in one archive."""

    max_upload_bytes: int = 1 << 30
    max_expanded_bytes: int = 4 << 30
    max_files: int = 10_000


class EstimateSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Dry runs: ``tokenizer_memory_bytes`` is the peak memory a tokenizer job should stay under (above it a
    unigram estimate suggests an ``input_sentence_size``); ``sample_bytes`` of the training text are encoded
    to estimate its tokens when no prepared dataset is cached; more than ``max_epochs`` epochs warns of
    overfitting; ``throughput_runs`` recent succeeded runs give the pool's measured throughput."""

    tokenizer_memory_bytes: int = 4 << 30
    sample_bytes: int = 4 << 20
    max_epochs: float = 10.0
    throughput_runs: int = 5


class WebhookSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Webhook deliveries (``mt_storage.webhooks``).

    ``allow_private_addresses`` lets endpoints resolve to private, loopback, link-local or other non-public
    addresses (off: such an endpoint is refused at registration and at every delivery, SSRF). ``timeout`` is
    seconds per HTTP attempt (connect, send, receive each). A failed attempt ``n`` (1-based) is retried after
    ``retry_first_seconds * retry_factor ** (n - 1)`` seconds until ``max_attempts`` attempts were made: the
    defaults retry after 5 s, 20 s, 80 s, 5.3 min, 21 min, 1.4 h, 5.7 h and 22.8 h, the last about 30 hours
    after the first. ``concurrency`` is how many deliveries one webhook worker sends at once.
    """

    allow_private_addresses: bool = False
    timeout: float = 10.0
    retry_first_seconds: float = 5.0
    retry_factor: float = 4.0
    max_attempts: int = 9
    concurrency: int = 16

    def retry_delay(self, attempt: int) -> float | None:
        """Seconds from failed attempt ``attempt`` (1-based) to the next, or ``None`` when it was the last."""
        if attempt >= self.max_attempts:
            return None
        return self.retry_first_seconds * self.retry_factor ** (attempt - 1)


class ApiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings of the HTTP gateway."""

    redis: RedisSettings = RedisSettings()
    app: AppSettings = AppSettings()
    storage: StorageSettings = StorageSettings()
    queue: QueueSettings = QueueSettings()
    http: HttpSettings = HttpSettings()
    api: GatewaySettings = GatewaySettings()

    inference: InferenceSettings = InferenceSettings()
    corpus: CorpusSettings = CorpusSettings()
    estimate: EstimateSettings = EstimateSettings()
    webhooks: WebhookSettings = WebhookSettings()


class WorkerServiceSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings of a worker service (tokenizer or trainer)."""

    redis: RedisSettings = RedisSettings()
    app: AppSettings = AppSettings()
    storage: StorageSettings = StorageSettings()
    queue: QueueSettings = QueueSettings()
    worker: WorkerSettings = WorkerSettings()
    webhooks: WebhookSettings = WebhookSettings()
    launcher: LauncherSettings = LauncherSettings()


def from_env(settings_type: type[S], environ: Mapping[str, str]) -> S:
    """Build ``settings_type`` from ``environ`` (usually ``os.environ``), reading ``SECTION__KEY`` variables.

    Raises:
        SettingsError: an unknown key inside a declared section, or a value of the wrong type.
    """
    sections = {field.name: field.type for field in msgspec.structs.fields(settings_type)}
    nested: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        section, sep, key = name.partition("__")
        section_type = sections.get(section.lower())
        if not sep or section_type is None:
            continue
        known = [f"{section.upper()}__{field.name.upper()}" for field in msgspec.structs.fields(section_type)]
        if name.upper() not in known:
            close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"the {section.upper()} settings are {', '.join(known)}"
            raise SettingsError(f"{name} is not a setting: {hint} (.env.example lists every setting)")
        nested.setdefault(section.lower(), {})[key.lower()] = value
    try:
        return msgspec.convert(nested, settings_type, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid settings from the environment: {_env_path(str(exc), environ)}") from exc


def _env_path(message: str, environ: Mapping[str, str]) -> str:
    """Rewrite msgspec's ``$.app.runs_root`` paths into the variable name a user sets (``APP__RUNS_ROOT``)."""
    head, sep, path = message.rpartition(" - at `$.")
    if not sep:
        return message
    variable = path.rstrip("`").replace(".", "__").upper()
    sent = next((value for name, value in environ.items() if name.upper() == variable), None)
    return f"{variable}={sent!r}: {head}" if sent is not None else f"{head} - variable {variable}"
