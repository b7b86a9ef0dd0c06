# syntax=docker/dockerfile:1
# servegate container image: a builder stage installs the package into a virtual environment, the
# runtime stage copies only that environment onto a slim Python and runs it as a non-root user.
#
#   docker build -t servegate:0.1.0 .
#   docker run --read-only -p 8000-8002:8000-8002 -v "$PWD/models:/models:ro" servegate:0.1.0
#
# Build arguments:
#   PYTHON_IMAGE         base of both stages (pin a digest for reproducible builds)
#   EXTRA_PIP_PACKAGES   installed after servegate, e.g. "onnxruntime-gpu[cuda,cudnn]" to bring the
#                        CUDA and cuDNN user-space libraries for the CUDA execution provider
#   SERVEGATE_UID        numeric user and group id the gateway runs as

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# Compilers only for the rare dependency without a wheel for the target platform; they stay here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/servegate \
    PATH=/opt/servegate/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/servegate \
    && pip install --upgrade pip setuptools wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY kernels ./kernels
COPY rollout ./rollout
COPY loadtests ./loadtests
ARG EXTRA_PIP_PACKAGES=""
# pip compiles the bytecode here, because the runtime's root filesystem is read-only.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels . \
    && pip install --no-index --find-links /wheels servegate \
    && if [ -n "$EXTRA_PIP_PACKAGES" ]; then set -f; pip install $EXTRA_PIP_PACKAGES; fi \
    && servegate --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
ARG SERVEGATE_UID=10001
LABEL org.opencontainers.image.title="servegate" \
      org.opencontainers.image.description="Model serving gateway with rollout control" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid ${SERVEGATE_UID} servegate \
    && useradd --system --uid ${SERVEGATE_UID} --gid ${SERVEGATE_UID} --no-create-home \
       --home-dir /var/lib/servegate --shell /usr/sbin/nologin servegate \
    && mkdir -p /var/lib/servegate /models \
    && chown ${SERVEGATE_UID}:${SERVEGATE_UID} /var/lib/servegate \
    && chmod 0750 /var/lib/servegate
COPY --from=builder /opt/servegate /opt/servegate
COPY deploy/docker/healthcheck.py /opt/servegate/healthcheck.py
# Everything written at run time goes to /var/lib/servegate (state, compiled-kernel cache) or /tmp;
# the default store is SQLite there, and a replica set points SERVEGATE_STORE at Redis instead.
ENV PATH=/opt/servegate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/servegate \
    TMPDIR=/tmp \
    NUMBA_CACHE_DIR=/var/lib/servegate/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    SERVEGATE_STORE=sqlite:///var/lib/servegate/servegate.db
VOLUME ["/var/lib/servegate", "/tmp"]
WORKDIR /var/lib/servegate
USER ${SERVEGATE_UID}:${SERVEGATE_UID}
# 8000 HTTP data plane, 8001 gRPC data plane, 8002 admin API and /metrics.
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/servegate/healthcheck.py"]
# The gateway drains on SIGTERM: not ready, finish in-flight requests, flush state, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["servegate"]
CMD ["serve", "--repository", "/models", "--host", "0.0.0.0"]
