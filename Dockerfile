# syntax=docker/dockerfile:1
# One image per CryptoViz component, each with only its own dependencies (build with --target):
#   scraper    cryptoviz scrape --once | backfill | notify (the CronJob, backfill Jobs, the notifier; helm test)
#   ingester   cryptoviz ingest | cryptoviz backup DIR (the StatefulSet and the backup CronJob)
#   dashboard  cryptoviz dashboard
#   operator   kopf run --standalone -m cryptoviz_operator ...
# Every dependency comes from locks/<component>.txt with its hash checked (the lock stays in the image
# as /opt/venvs/<component>.lock); the images carry no pip, uv, build backend or test tool: those live
# in the `tools` stage and are only mounted while a venv is filled. `scripts/images.sh` builds all four.
# PYTHON_IMAGE is the official image pinned by digest (docs/kubernetes.md says how to update and
# verify it); the container tests pass a local Debian 12 base instead (scripts/local-base.sh).
# checkov:skip=CKV_DOCKER_7: ARG PYTHON_IMAGE's default is pinned by digest (checkov cannot resolve ARGs)
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

# ---- tools: the build's own tools from the build lock (mounted into RUNs, never in an image) ----
FROM ${PYTHON_IMAGE} AS tools
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY locks/build.txt /locks/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/tools && /opt/tools/bin/pip install --require-hashes -r /locks/build.txt

# ---- wheel: the project, built offline by the locked build backend ----
FROM ${PYTHON_IMAGE} AS wheel
COPY --from=tools /opt/tools /opt/tools
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY operator ./operator
RUN /opt/tools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

# ---- runtime: what every component image shares (non-root UID, read-only friendly, no compilers) ----
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="cryptoviz" \
      org.opencontainers.image.description="Real-time crypto prices on Kubernetes: scraper, ingester, dashboard, operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/cryptoviz/cryptoviz"
# HOME and caches under /tmp: the chart runs with a read-only root filesystem and an emptyDir on /tmp.
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json
WORKDIR /tmp
# Health is per component (HTTP probes in the Helm chart), so the images declare none.
HEALTHCHECK NONE
ENTRYPOINT ["cryptoviz"]
CMD ["--help"]

# ---- one target per component: its venv filled by uv from its lock (hash-checked, one download cache
# for all targets, bytecode compiled; the packages' own test suites and C headers dropped), then the
# project's wheel, then a smoke test importing the component (a dependency missing from its extra fails).

FROM runtime AS scraper
LABEL org.opencontainers.image.title="cryptoviz-scraper"
COPY locks/scraper.txt /opt/venvs/scraper.lock
RUN --mount=type=cache,target=/var/cache/uv --mount=type=bind,from=tools,source=/opt/tools,target=/opt/tools \
    python -m venv --without-pip /opt/venvs/scraper \
    && UV_CACHE_DIR=/var/cache/uv UV_NATIVE_TLS=1 UV_LINK_MODE=copy \
       /opt/tools/bin/uv pip install --python /opt/venvs/scraper/bin/python \
         --require-hashes --compile-bytecode -r /opt/venvs/scraper.lock \
    && find /opt/venvs/scraper/lib -depth -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf /opt/venvs/scraper/lib/python3*/site-packages/pyarrow/include \
    && find /opt/venvs/scraper/lib \( -name '*.pyx' -o -name '*.pxd' \) -delete
COPY --from=wheel /dist/ /opt/venvs/scraper.dist/
RUN --mount=type=bind,from=tools,source=/opt/tools,target=/opt/tools \
    /opt/tools/bin/uv pip install --python /opt/venvs/scraper/bin/python --no-deps --no-cache \
         --compile-bytecode /opt/venvs/scraper.dist/*.whl \
    && /opt/venvs/scraper/bin/cryptoviz --help >/dev/null \
    && PYTHONDONTWRITEBYTECODE=1 /opt/venvs/scraper/bin/python -c "import cryptoviz.scraper.cli, cryptoviz.notify.service, cryptoviz.scraper.backfill"
ENV PATH=/opt/venvs/scraper/bin:$PATH
USER 10001:10001

FROM runtime AS ingester
LABEL org.opencontainers.image.title="cryptoviz-ingester"
COPY locks/ingester.txt /opt/venvs/ingester.lock
RUN --mount=type=cache,target=/var/cache/uv --mount=type=bind,from=tools,source=/opt/tools,target=/opt/tools \
    python -m venv --without-pip /opt/venvs/ingester \
    && UV_CACHE_DIR=/var/cache/uv UV_NATIVE_TLS=1 UV_LINK_MODE=copy \
       /opt/tools/bin/uv pip install --python /opt/venvs/ingester/bin/python \
         --require-hashes --compile-bytecode -r /opt/venvs/ingester.lock \
    && find /opt/venvs/ingester/lib -depth -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf /opt/venvs/ingester/lib/python3*/site-packages/pyarrow/include \
    && find /opt/venvs/ingester/lib \( -name '*.pyx' -o -name '*.pxd' \) -delete
COPY --from=wheel /dist/ /opt/venvs/ingester.dist/
RUN --mount=type=bind,from=tools,source=/opt/tools,target=/opt/tools \
    /opt/tools/bin/uv pip install --python /opt/venvs/ingester/bin/python --no-deps --no-cache \
         --compile-bytecode /opt/venvs/ingester.dist/*.whl \
    && /opt/venvs/ingester/bin/cryptoviz --help >/dev/null \
    && PYTHONDONTWRITEBYTECODE=1 /opt/venvs/ingester/bin/python -c "import cryptoviz.ingester.service, cryptoviz.ingester.backup"
ENV PATH=/opt/venvs/ingester/bin:$PATH
USER 10001:10001
EXPOSE 8000

FROM runtime AS dashboard
LABEL org.opencontainers.image.title="cryptoviz-dashboard"
COPY locks/dashboard.txt /opt/venvs/dashboard.lock
RUN --mount=type=cache,target=/var/cache/uv --mount=type=bind,from=tools,source=/opt/tools,target=/opt/tools \
    python -m venv --without-pip /opt/venvs/dashboard \
    && UV_CACHE_DIR=/var/cache/uv UV_NATIVE_TLS=1 UV_LINK_MODE=copy \
       /opt/tools/bin/uv pip install --python /opt/venvs/dashboard/bin/python \
         --require-hashes --compile-bytecode -r /opt/venvs/dashboard.lock \
    && find /opt/venvs/dashboard/lib -depth -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf /opt/venvs/dashboard/lib/python3*/site-packages/pyarrow/include \
    && find /opt/venvs/dashboard/lib \( -name '*.pyx' -o -name '*.pxd' \) -delete
COPY --from=wheel /dist/ /opt/venvs/dashboard.dist/
RUN --mount=type=bind,from=tools,source=/opt/tools,target=/opt/tools \
    /opt/tools/bin/uv pip install --python /opt/venvs/dashboard/bin/python --no-deps --no-cache \
         --compile-bytecode /opt/venvs/dashboard.dist/*.whl \
    && /opt/venvs/dashboard/bin/cryptoviz --help >/dev/null \
    && PYTHONDONTWRITEBYTECODE=1 /opt/venvs/dashboard/bin/python -c "import cryptoviz.dashboard.app"
ENV PATH=/opt/venvs/dashboard/bin:$PATH
USER 10001:10001
EXPOSE 5006 9464

FROM runtime AS operator
LABEL org.opencontainers.image.title="cryptoviz-operator"
COPY locks/operator.txt /opt/venvs/operator.lock
RUN --mount=type=cache,target=/var/cache/uv --mount=type=bind,from=tools,source=/opt/tools,target=/opt/tools \
    python -m venv --without-pip /opt/venvs/operator \
    && UV_CACHE_DIR=/var/cache/uv UV_NATIVE_TLS=1 UV_LINK_MODE=copy \
       /opt/tools/bin/uv pip install --python /opt/venvs/operator/bin/python \
         --require-hashes --compile-bytecode -r /opt/venvs/operator.lock \
    && find /opt/venvs/operator/lib -depth -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf /opt/venvs/operator/lib/python3*/site-packages/pyarrow/include \
    && find /opt/venvs/operator/lib \( -name '*.pyx' -o -name '*.pxd' \) -delete
COPY --from=wheel /dist/ /opt/venvs/operator.dist/
RUN --mount=type=bind,from=tools,source=/opt/tools,target=/opt/tools \
    /opt/tools/bin/uv pip install --python /opt/venvs/operator/bin/python --no-deps --no-cache \
         --compile-bytecode /opt/venvs/operator.dist/*.whl \
    && /opt/venvs/operator/bin/cryptoviz --help >/dev/null \
    && PYTHONDONTWRITEBYTECODE=1 /opt/venvs/operator/bin/python -c "import cryptoviz_operator"
ENV PATH=/opt/venvs/operator/bin:$PATH
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["kopf"]
CMD ["run", "--standalone", "-m", "cryptoviz_operator", "--liveness=http://0.0.0.0:8080/healthz"]
