# syntax=docker/dockerfile:1
# sbworker: Service Bus → Durable Task Scheduler worker.
# Stage 1 builds wheels for the package and its runtime dependencies only (no `local`/`dev` extras);
# stage 2 installs them from those wheels, offline, into a slim image that has no compiler.

FROM python:3.12.8-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
# Only the product's packages: the local stack (localbus, localdts) and bench/ stay out of the image.
COPY listener ./listener
COPY orchestrations ./orchestrations
COPY activities ./activities
COPY sbworker ./sbworker
# The exact versions the tests passed with (constraints.txt): a rebuild cannot switch an SDK patch off.
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .

# Same base as the builder (keep the two tags equal when bumping).
FROM python:3.12.8-slim-bookworm AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HEALTH_PORT=8000
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/sbworker-*.whl \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sbworker
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
# Slim images have no curl: probe /healthz with the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTH_PORT', '8000'), timeout=3)"]
STOPSIGNAL SIGTERM
# Exec form: sbworker is PID 1 and receives SIGTERM directly (it installs its own handler).
ENTRYPOINT ["sbworker"]
CMD ["run"]
