# The service image, in two stages (Docker 23 or later: BuildKit, for the bind mount below).
# `build` turns requirements.lock (every dependency pinned, each download checked against its
# hash) and the project into wheels; `runtime` installs only those wheels, offline, into a slim
# image that holds no compiler, no pip cache, no source and nothing of the dev tools or the test
# suite (those are in requirements-dev.lock, which never enters the image).
#
# The API runs under uvicorn: NEGLECT_WORKERS processes, 2 by default; set 1 for one process per
# container and scale by replicas (compose.yaml and deploy/kubernetes do). The release step runs
# from the same image with the owner's NEGLECT_OWNER_DATABASE_URL (a direct connection, not a
# transaction-mode pooler): `neglect-service migrate && neglect-service db roles`. Every Alembic
# run takes a PostgreSQL advisory lock first, so two release steps at once run one after the
# other. The replicas get only DATABASE_URL, the runtime role's. The signing keys'
# key-encryption key comes from NEGLECT_KEY_ENCRYPTION_KEY or a secret file named by
# NEGLECT_KEY_ENCRYPTION_KEY_FILE: the image is production and does not start without one.
#
# The base is pinned by tag and by the digest of its multi-architecture index. Moving to a newer
# patch release is a deliberate change of both (README, "Production").
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# First the locked build backend (setuptools, a wheel checked against its hash) into a build
# venv; then one wheel per locked package, each download checked against the lock's hashes. A
# package published only as source (sly, which odata-query needs) is built with that backend and
# no build isolation, so nothing the lock does not pin is fetched. Only the lock is copied
# first, so editing the code reuses these layers.
COPY requirements.lock ./
RUN python -m venv /opt/build \
    && awk '/^setuptools==/{p=1} p{print} p&&!/\\$/{exit}' requirements.lock > /tmp/backend.lock \
    && /opt/build/bin/pip install --require-hashes --no-deps --only-binary :all: -r /tmp/backend.lock \
    && /opt/build/bin/pip wheel --require-hashes --no-deps --no-build-isolation \
        --wheel-dir /wheels -r requirements.lock

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

# Migrations, so the release step can run from this image (`neglect-service migrate`).
COPY alembic.ini ./
COPY alembic ./alembic

USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=3)"]

# The webhook workers run from this image too, with the command `neglect-service worker` (and a
# stop timeout above 20 s, so SIGTERM lets the batch in flight finish).
# uvicorn's access log would print query strings; the service logs each request itself. On
# SIGTERM uvicorn stops accepting, lets requests in flight finish (up to the graceful timeout),
# runs the lifespan's shutdown and exits; keep the orchestrator's grace period above it.
CMD ["sh", "-c", "exec uvicorn api.main:create_app --factory --host 0.0.0.0 --port 8000 --workers \"${NEGLECT_WORKERS:-2}\" --no-access-log --timeout-graceful-shutdown \"${NEGLECT_GRACEFUL_SHUTDOWN_S:-20}\""]
