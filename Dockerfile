# Kaiketsu portal image: one image for the web (uvicorn), the Celery worker and winsim.
# Build: docker compose build   (see docker-compose.yml and README.md)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=portal.settings

# gettext: msgfmt for compilemessages (the ja catalogue), at build time only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gettext \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, from pyproject.toml's runtime list, so code edits keep this layer cached.
# EXTRAS names optional lists to add: docker-compose.yml builds the demo's winsim image with
# "winsim" (tree-sitter); the portal's image goes without it.
ARG EXTRAS=""
COPY pyproject.toml ./
COPY scripts/deps.py scripts/deps.py
RUN python scripts/deps.py $(for extra in $EXTRAS; do echo "--extra $extra"; done) > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .

# DEBUG=true only lends these build steps the dev keys: they read settings, touch no database.
# compilemessages fails on a tree without catalogues, hence the check for a .po file first.
RUN if find . -name '*.po' -path '*/LC_MESSAGES/*' | grep -q .; then \
        DEBUG=true python manage.py compilemessages --ignore=var; \
    fi \
    && DEBUG=true python manage.py collectstatic --noinput

RUN useradd --create-home --uid 10001 kaiketsu \
    && mkdir -p /app/var \
    && chown kaiketsu:kaiketsu /app/var
USER kaiketsu

EXPOSE 8000
CMD ["uvicorn", "portal.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--timeout-graceful-shutdown", "5"]
