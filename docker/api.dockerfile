# syntax=docker/dockerfile:1.7
# Serving image: FastAPI + ONNX Runtime, no PyTorch. The Python dependencies are exactly requirements/serve.txt
# (tests/test_serving_image.py proves that set serves an exported model, with torch not importable).
#
#   python -m pokedex.export ckpt_path=outputs/train/<run>/checkpoints/best.ckpt output=models/model.onnx
#   docker build -f docker/api.dockerfile -t pokedex-api .
#   docker run --rm -p 8000:8000 -v "$PWD/models:/app/models:ro" pokedex-api
#   docker run --rm -e PORT=9123 -p 9123:9123 -v "$PWD/models:/app/models:ro" pokedex-api   # listens on $PORT
#
# The model is mounted (models/model.onnx and its sidecar metadata), so one image serves any model; arguments
# after the image name replace the defaults in CMD, e.g. `... pokedex-api model_path=/app/models/other.onnx`.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
# builder: a venv with the serving dependencies only; its one input is requirements/serve.txt, so code
# changes never re-run it.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements/serve.txt /tmp/serve.txt
# Two optional build secrets (absent from a plain build, and never stored in a layer): `pip.conf`, mounted as
# the site-wide pip configuration, and `ca.crt`, the CA bundle it may name, for builds whose package indexes
# sit behind a TLS-inspecting proxy or on the build host (scripts/docker_test.sh passes both).
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.crt \
    pip install -r /tmp/serve.txt "setuptools>=69" wheel
# The dependencies' own test suites never run here: ~50 MB of the image (numpy's and scipy's, mostly).
RUN find /opt/venv/lib -depth -type d -name tests -path "*/site-packages/*" -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------------------
# runtime: the venv, the code, an editable install of it (--no-deps), a non-root user and a health check.
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 --user-group pokedex
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY conf/ conf/
COPY pokedex/ pokedex/
# Fails the build if torch slipped into the image; the checks after it prove the app imports without it.
RUN pip install --no-deps --no-build-isolation -e . \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && python -c "import onnxruntime, pokedex.serve" \
    && mkdir -p models \
    && chown -R 10001:10001 /app
USER 10001
# The port is $PORT when set (Cloud Run sets it), else 8000: conf/serve.yaml reads the variable, so no shell is
# needed and the Python process is PID 1, receiving SIGTERM itself (uvicorn then drains and exits 0).
ENV PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/ready\", timeout=4).status != 200)"]
ENTRYPOINT ["python", "-m", "pokedex.serve"]
CMD ["model_path=/app/models/model.onnx", "host=0.0.0.0"]
