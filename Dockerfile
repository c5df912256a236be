# syntax=docker/dockerfile:1
# embedserve for linux/amd64: PyTorch (CPU build by default), the bundled all-MiniLM-L6-v2, or models mounted at /models.
#   docker build -t embedserve .
#   docker run --rm -p 8000:8000 embedserve
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" -e EMBEDSERVE_MODELS_FILE=/models/models.yaml embedserve
# GPU hosts: a CUDA build of torch (its wheels carry the CUDA libraries; the host's driver comes in with --gpus):
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 \
#     --build-arg BASE_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04 -t embedserve:cuda .
# The Python packages are the lines of deploy/requirements-torch.txt and deploy/requirements-amd64.txt, which
# tests/deploy installs into a fresh virtual environment and serves from with this ENTRYPOINT.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# CUDA bases ship no Python: take the distribution's (3.12 on Ubuntu 24.04). Python images skip this.
# hadolint ignore=DL3008
RUN command -v python3 >/dev/null || { apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*; }
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first and alone, from its own index: the layer stays cached while the code changes.
COPY deploy/requirements-torch.txt deploy/requirements-amd64.txt deploy/
RUN pip install --index-url "$TORCH_INDEX" -r deploy/requirements-torch.txt
COPY pyproject.toml README.md ./
COPY server server
COPY batching batching
COPY models models
COPY quantize quantize
RUN pip install -r deploy/requirements-amd64.txt

FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN command -v python3 >/dev/null || { apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*; }
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/embedserve embedserve \
    && mkdir /models && chown 10001:10001 /models
COPY --from=builder /opt/venv /opt/venv
# Settings are EMBEDSERVE_* variables (.env.example lists them all). Threads follow the container's CPU limit
# (its cgroup quota, models/cpus.py); EMBEDSERVE_THREADS overrides.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/home/embedserve/.cache/huggingface \
    EMBEDSERVE_HOST=0.0.0.0 \
    EMBEDSERVE_PORT=8000
USER 10001:10001
WORKDIR /home/embedserve
# backend auto serves CPU models through their ONNX fp32 export: the bundled model's is made and verified here, so
# a container starts without exporting. Models mounted at /models are exported at their first start; mount a
# volume here to keep their exports, or run `embedserve prepare` with their flags in a derived image.
ENV EMBEDSERVE_CACHE_DIR=/home/embedserve/.cache/embedserve
RUN HF_HUB_OFFLINE=1 embedserve prepare --log-level warning
EXPOSE 8000
# urllib raises on a 503 (loading, or draining after SIGTERM): no curl in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('EMBEDSERVE_PORT', '8000'), timeout=4)"]
# Exec form: the server is PID 1 and gets SIGTERM itself (readiness turns 503, in-flight work drains, exit 0).
# Arguments after the image name are `embedserve serve` flags, e.g. --model /models/my-model.
ENTRYPOINT ["embedserve", "serve"]
