# One image for the web server, the Celery worker and beat (README, "Deploying"); compose.yaml runs all three.
# It installs with bin/setup-venv, the same steps as a checkout, so the image and `bin/test` use the same packages.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/app/.venv/bin:$PATH \
    CDP_VAR_DIR=/app/var \
    STATIC_ROOT=/app/static \
    DEBUG=false

WORKDIR /app
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin cdp

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
COPY bin/setup-venv bin/
RUN bin/setup-venv

COPY . .
# Static files are collected into the image (WhiteNoise serves them); the keys are placeholders that exist only
# for this command: settings refuse to start with DEBUG off and no keys.
RUN SECRET_KEY=collectstatic-only CDP_PII_KEY=collectstatic-only python manage.py collectstatic --noinput -v 0 \
    && mkdir -p /app/var/feeds \
    && chown -R cdp:cdp /app/var

USER cdp
# Uploaded feeds (CDP_FEED_UPLOAD_DIR) live here: the web server writes them, a worker loads them.
VOLUME ["/app/var/feeds"]
EXPOSE 8000
# The web server; the worker and beat run the same image with `celery -A cdp worker` / `celery -A cdp beat`.
CMD ["gunicorn", "cdp.wsgi", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
