# SurveyHub's image: the web app (default command), `surveyhub worker`, `surveyhub scheduler`
# and `surveyhub db upgrade` all run from it. compose.yaml shows them together; settings come
# from the environment (docs/deploy.md), never from the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HUB_INSTANCE_PATH=/var/lib/surveyhub \
    HUB_BIND=0.0.0.0:8000

RUN useradd --system --create-home --uid 10001 --user-group surveyhub \
    && install -d -o surveyhub -g surveyhub /var/lib/surveyhub

# The same install as the README's Production section (templates and migrations ship
# inside the `hub` package); the source is removed afterwards, so /app holds only the
# WSGI entry point and gunicorn's settings.
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY hub hub
COPY templates templates
COPY migrations migrations
COPY plugins plugins
RUN pip install -c constraints.txt . plugins/metrics plugins/kustomer \
    && rm -rf /src/*

WORKDIR /app
COPY wsgi.py gunicorn.conf.py ./

USER surveyhub
EXPOSE 8000
CMD ["gunicorn", "wsgi:app"]
