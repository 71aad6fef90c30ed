# The backoffice-kpi image: `kpi worker` by default; docker-compose.yml also runs
# `kpi simulate` from it. Build from the repository root: docker build -t backoffice-kpi .
FROM python:3.11-slim

# The worker's HTTP server binds every interface of the container (the default, 127.0.0.1,
# would be unreachable from outside it).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KPI_WEB_HOST=0.0.0.0 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that editing the code rebuilds only
# the last layers. Empty packages stand in for the code while pip resolves the pins.
COPY pyproject.toml README.md ./
RUN mkdir streams schemas producers tooling kpi \
    && for p in streams schemas producers tooling kpi; do touch $p/__init__.py; done \
    && pip install . \
    && pip uninstall -y backoffice-kpi \
    && rm -rf build *.egg-info streams schemas producers tooling kpi

COPY streams ./streams
COPY schemas ./schemas
COPY producers ./producers
COPY tooling ./tooling
COPY kpi ./kpi
RUN pip install --no-deps . && rm -rf /src

# Unprivileged; faust keeps a small data directory (<app id>-data) in the working directory.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin kpi
USER kpi
WORKDIR /home/kpi

EXPOSE 6066
# /health answers 503 while Redis is unreachable (streams/app.py). The slim image has no
# curl, so the probe is Python's urllib; any error or non-2xx status is unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('KPI_WEB_PORT', '6066'), timeout=4)"]

CMD ["kpi", "worker"]
