# The service image: the API under uvicorn. Run `neglect-service migrate && neglect-service db
# roles` from the same image as a release step before starting new replicas, with the owner's
# NEGLECT_OWNER_DATABASE_URL; the replicas get only DATABASE_URL, the runtime role's. The signing
# keys' key-encryption key comes from NEGLECT_KEY_ENCRYPTION_KEY or a secret file named by
# NEGLECT_KEY_ENCRYPTION_KEY_FILE: the image is production and does not start without one.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NEGLECT_ENV=production \
    NEGLECT_WORKERS=2

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin app

WORKDIR /app

# The package alone (no dev extras); its source is not kept in the image.
COPY pyproject.toml /tmp/src/
COPY api /tmp/src/api
COPY schemas /tmp/src/schemas
COPY service /tmp/src/service
RUN pip install /tmp/src && rm -rf /tmp/src

# Migrations, so the release step can run from this image (`neglect-service migrate`).
COPY alembic.ini ./
COPY alembic ./alembic

USER app
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=3)"]

# The webhook workers run from this image too, with the command `neglect-service worker` (and a
# stop timeout above 20 s, so SIGTERM lets the batch in flight finish).
# uvicorn's access log would print query strings; the service logs each request itself.
CMD ["sh", "-c", "exec uvicorn api.main:create_app --factory --host 0.0.0.0 --port 8000 --workers \"${NEGLECT_WORKERS:-2}\" --no-access-log"]
