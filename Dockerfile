# syntax=docker/dockerfile:1
# One image for every CryptoViz component; the command picks the component:
#   cryptoviz scrape --once | cryptoviz ingest | cryptoviz dashboard | cryptoviz backup DIR
#   kopf run --standalone -m cryptoviz_operator ...   (the operator)
# ---- build: install the project and its dependencies into a self-contained venv ----
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/cryptoviz
COPY pyproject.toml README.md ./
COPY services ./services
COPY operator ./operator
# Install, smoke-test the entry points, then drop pip: the runtime installs nothing.
RUN /opt/cryptoviz/bin/pip install --no-cache-dir . \
    && /opt/cryptoviz/bin/cryptoviz --help >/dev/null \
    && /opt/cryptoviz/bin/python -c "import cryptoviz, cryptoviz_operator, kopf" \
    && /opt/cryptoviz/bin/python -m pip uninstall --yes --quiet pip

# ---- runtime: the venv on a slim base, no compilers, fixed non-root UID ----
FROM python:3.11-slim-bookworm AS runtime
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
COPY --from=build /opt/cryptoviz /opt/cryptoviz
# HOME and caches under /tmp: the chart runs with a read-only root filesystem and an emptyDir on /tmp.
ENV PATH=/opt/cryptoviz/bin:$PATH \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000 5006 8080 9464
# Health is per component (HTTP probes in the Helm chart), so the image itself declares none.
HEALTHCHECK NONE
ENTRYPOINT ["cryptoviz"]
CMD ["--help"]
