# syntax=docker/dockerfile:1
# One image per CryptoViz component, each with only its own dependencies (build with --target):
#   scraper    cryptoviz scrape --once                 (the CronJob; also runs the `helm test` pod)
#   ingester   cryptoviz ingest | cryptoviz backup DIR (the StatefulSet and the backup CronJob)
#   dashboard  cryptoviz dashboard
#   operator   kopf run --standalone -m cryptoviz_operator ...
# Every dependency comes from locks/<component>.txt with its hash checked; the runtime images carry
# no pip, no build backend and no test tool. `scripts/images.sh` builds all four.
# PYTHON_IMAGE is the official image pinned by digest (docs/kubernetes.md says how to update and
# verify it); the container tests pass a local Debian 12 base instead (scripts/local-base.sh).
# checkov:skip=CKV_DOCKER_7: ARG PYTHON_IMAGE's default is pinned by digest (checkov cannot resolve ARGs)
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

# ---- wheel: the project, built offline by the locked build backend ----
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY locks/build.txt /locks/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/build && /opt/build/bin/pip install --require-hashes -r /locks/build.txt
COPY pyproject.toml README.md ./
COPY services ./services
COPY operator ./operator
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

# ---- venvs: each component's locked dependencies in a venv of its own, then the project's wheel ----
FROM ${PYTHON_IMAGE} AS venvs
# uv (itself from the build lock) installs the locks: hash-checked like pip, with one download cache
# for all four venvs and bytecode compiled in parallel. TLS through the system's CA bundle.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    UV_NATIVE_TLS=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
COPY locks/build.txt locks/scraper.txt locks/ingester.txt locks/dashboard.txt locks/operator.txt /locks/
# Each venv is made where its image runs it (its scripts name their interpreter); the tools that fill
# it stay outside it. The packages' own test suites and C headers are dropped.
RUN --mount=type=cache,target=/root/.cache \
    python -m venv /opt/tools \
    && /opt/tools/bin/pip install --require-hashes -r /locks/build.txt \
    && for component in scraper ingester dashboard operator; do \
         python -m venv --without-pip "/opt/venvs/${component}" \
         && /opt/tools/bin/uv pip install --python "/opt/venvs/${component}/bin/python" --require-hashes \
              --compile-bytecode -r "/locks/${component}.txt" \
         && find "/opt/venvs/${component}/lib" -depth -type d -name tests -prune -exec rm -rf {} + \
         && rm -rf "/opt/venvs/${component}"/lib/python3*/site-packages/pyarrow/include \
         && find "/opt/venvs/${component}/lib" \( -name '*.pyx' -o -name '*.pxd' \) -delete || exit 1; \
       done
COPY --from=wheel /dist /dist
# The smoke test imports each component's entry module: a dependency missing from its extra fails here.
RUN for component in scraper ingester dashboard operator; do \
         case "${component}" in \
           scraper) module=cryptoviz.scraper.cli ;; \
           ingester) module="cryptoviz.ingester.service, cryptoviz.ingester.backup" ;; \
           dashboard) module=cryptoviz.dashboard.app ;; \
           operator) module=cryptoviz_operator ;; \
         esac \
         && /opt/tools/bin/uv pip install --python "/opt/venvs/${component}/bin/python" --no-deps --compile-bytecode \
              /dist/*.whl \
         && "/opt/venvs/${component}/bin/cryptoviz" --help >/dev/null \
         && PYTHONDONTWRITEBYTECODE=1 "/opt/venvs/${component}/bin/python" -c "import ${module}" || exit 1; \
       done

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
USER 10001:10001
# Health is per component (HTTP probes in the Helm chart), so the images declare none.
HEALTHCHECK NONE
ENTRYPOINT ["cryptoviz"]
CMD ["--help"]

FROM runtime AS scraper
LABEL org.opencontainers.image.title="cryptoviz-scraper"
COPY --from=venvs /opt/venvs/scraper /opt/venvs/scraper
ENV PATH=/opt/venvs/scraper/bin:$PATH

FROM runtime AS ingester
LABEL org.opencontainers.image.title="cryptoviz-ingester"
COPY --from=venvs /opt/venvs/ingester /opt/venvs/ingester
ENV PATH=/opt/venvs/ingester/bin:$PATH
EXPOSE 8000

FROM runtime AS dashboard
LABEL org.opencontainers.image.title="cryptoviz-dashboard"
COPY --from=venvs /opt/venvs/dashboard /opt/venvs/dashboard
ENV PATH=/opt/venvs/dashboard/bin:$PATH
EXPOSE 5006 9464

FROM runtime AS operator
LABEL org.opencontainers.image.title="cryptoviz-operator"
COPY --from=venvs /opt/venvs/operator /opt/venvs/operator
ENV PATH=/opt/venvs/operator/bin:$PATH
EXPOSE 8080
ENTRYPOINT ["kopf"]
CMD ["run", "--standalone", "-m", "cryptoviz_operator", "--liveness=http://0.0.0.0:8080/healthz"]
