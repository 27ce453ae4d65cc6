# syntax=docker/dockerfile:1.7
#
# tts-processor image: one process = one Kafka consumer-group member = one GPU.
#
# * CUDA: torch 2.11 wheels from PyPI (cu130) bring their own CUDA 13.0 user-space libraries as
#   nvidia-* wheels; the base image supplies the matching CUDA 13.0 runtime environment
#   (NVIDIA_* variables for the container toolkit, driver >= 580 on the node).
# * Python 3.11 is uv-managed (Ubuntu 24.04 ships 3.12); the project pins only-system in
#   pyproject.toml for developer machines, so the build overrides that with UV_PYTHON_PREFERENCE.
# * Dependencies come from uv.lock only (uv sync --locked --no-dev: a lock that no longer matches
#   pyproject.toml fails the build instead of being used).
# * Model weights are NOT baked in: they live on a volume (see the Helm chart).
#
# Build:  docker build -t tts-processor:dev .

ARG PYTHON_VERSION=3.11

# CUDA 13.0 runtime on Ubuntu 24.04; both stages derive from it (same glibc).
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04 AS cuda-base

# --------------------------------------------------------------------------- builder
FROM cuda-base AS builder
ARG PYTHON_VERSION

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Compiler for the one sdist-only dependency (cdifflib, via nemo_text_processing).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# uv from the official image, pinned (same version as the development toolchain).
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /usr/local/bin/

ENV UV_PYTHON_PREFERENCE=only-managed \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

RUN uv python install "${PYTHON_VERSION}"

WORKDIR /app

# Dependencies first (cached layer while only the source changes).
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project --python "${PYTHON_VERSION}"

# Then the project itself, installed non-editable so the runtime needs only the venv.
COPY processor ./processor
RUN uv sync --locked --no-dev --no-editable --python "${PYTHON_VERSION}"

# --------------------------------------------------------------------------- runtime
FROM cuda-base AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

LABEL org.opencontainers.image.title="tts-processor" \
      org.opencontainers.image.description="Kafka-native IndexTTS2 text-to-speech processor"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libgomp1 libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "${APP_GID}" app \
    && useradd --uid "${APP_UID}" --gid "${APP_GID}" --no-create-home --home-dir /app --shell /usr/sbin/nologin app

COPY --from=builder /opt/python /opt/python
COPY --from=builder /app/.venv /app/.venv
COPY scripts/warm_caches.py /app/scripts/warm_caches.py

# TTS_CACHE_DIR holds warm-up caches baked at build time (numba, NeMo text-normalisation
# grammars). At run time the chart copies it into a writable emptyDir and points these
# variables there, so the root filesystem can stay read-only.
ENV PATH=/app/.venv/bin:${PATH} \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTP_PORT=8080 \
    TTS_CACHE_DIR=/opt/tts/cache \
    NUMBA_CACHE_DIR=/opt/tts/cache/numba \
    XDG_CACHE_HOME=/opt/tts/cache/xdg \
    HF_HOME=/models/hf-home \
    HF_HUB_DISABLE_TELEMETRY=1 \
    INDEX_TTS_MODEL_DIR=/models/IndexTTS-2

RUN mkdir -p /opt/tts/cache/numba /opt/tts/cache/xdg /models \
    && chown -R "${APP_UID}:${APP_GID}" /opt/tts /models

WORKDIR /app
USER ${APP_UID}:${APP_GID}

# Bake the JIT/grammar warm-ups into the image (no GPU and no model weights needed).
RUN python /app/scripts/warm_caches.py

EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HTTP_PORT', '8080') + '/livez', timeout=4)"]

ENTRYPOINT ["tts-processor"]
CMD ["run"]
