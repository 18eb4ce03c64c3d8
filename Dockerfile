# The service image, in two stages (Docker 23 or later: BuildKit, for the bind mount below).
# `build` turns requirements.lock (every dependency pinned, each download checked against its
# hash) and the project into wheels; `runtime` installs only those wheels, offline, into a slim
# image that holds no compiler, no pip cache, no source and nothing of the dev tools or the test
# suite.
#
# The API runs under uvicorn (NEGLECT_WORKERS processes; set 1 for one process per container and
# scale by replicas). Run `alembic upgrade head` from the same image as the release step: it takes
# a PostgreSQL advisory lock first, so two release steps at once run one after the other. The
# database comes from DATABASE_URL; the signing keys' key-encryption key from
# NEGLECT_KEY_ENCRYPTION_KEY or a secret file named by NEGLECT_KEY_ENCRYPTION_KEY_FILE: the image
# is production and does not start without one.
#
# The base is pinned by tag and by the digest of its multi-architecture index. Moving to a newer
# patch release is a deliberate change of both (README, "Production").
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# One wheel per locked package, each download checked against the lock's hashes; then the locked
# build backend (setuptools) from those wheels, to build the project with. Only the lock is
# copied first, so editing the code reuses these layers.
COPY requirements.lock ./
RUN pip wheel --require-hashes --no-deps --wheel-dir /wheels -r requirements.lock \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --no-index --no-deps /wheels/setuptools-*.whl

COPY pyproject.toml ./
COPY api ./api
COPY schemas ./schemas
COPY service ./service
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .


FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    NEGLECT_ENV=production \
    NEGLECT_WORKERS=2

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin app

WORKDIR /app

# The wheels are mounted from the build stage for this one step, so they never become a layer;
# --no-index: nothing is fetched or resolved here, only what the lock produced is installed.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --no-deps /wheels/*.whl

# Migrations, so the release step can run from this image: `alembic upgrade head`.
COPY alembic.ini ./
COPY alembic ./alembic

USER app
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=3)"]

# uvicorn's access log would print query strings; the service logs each request itself. On
# SIGTERM uvicorn stops accepting, lets requests in flight finish (up to the graceful timeout),
# runs the lifespan's shutdown and exits; keep the orchestrator's grace period above it.
CMD ["sh", "-c", "exec uvicorn api.main:create_app --factory --host 0.0.0.0 --port 8000 --workers \"${NEGLECT_WORKERS:-2}\" --no-access-log --timeout-graceful-shutdown \"${NEGLECT_GRACEFUL_SHUTDOWN_S:-20}\""]
