# syntax=docker/dockerfile:1.7
# Serving image: FastAPI + ONNX Runtime, no PyTorch. The Python dependencies are exactly requirements/serve.txt
# (tests/test_serving_image.py proves that set serves an exported model, with torch not importable).
#
#   python -m pokedex.export ckpt_path=outputs/train/<run>/checkpoints/best.ckpt output=models/model.onnx
#   docker build -f docker/api.dockerfile -t pokedex-api .
#   docker run --rm -p 8000:8000 -v "$PWD/models:/app/models:ro" pokedex-api
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
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /tmp/serve.txt "setuptools>=69" wheel

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
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4).status != 200)"]
ENTRYPOINT ["python", "-m", "pokedex.serve"]
CMD ["model_path=/app/models/model.onnx", "host=0.0.0.0", "port=8000"]
