# The backoffice-kpi image: `kpi worker` by default; docker-compose.yml also runs
# `kpi simulate` from it. Build from the repository root: docker build -t backoffice-kpi .
# Two stages: the builder installs the package with its worker extra at the tested versions
# (constraints.txt) into /opt/venv and compiles the engine with mypyc; the runtime image,
# slim, copies /opt/venv alone: no compiler, no mypy, no pip cache.
#
# The Python CI tests on; --build-arg PYTHON_VERSION=3.11.x (or 3.12, 3.13) for another.
# Both stages must use the same one: the compiled engine is built for its ABI.
ARG PYTHON_VERSION=3.11.7

FROM python:${PYTHON_VERSION}-bookworm AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml and the constraints alone, so that editing the
# code rebuilds only the last layers. Empty packages stand in for the code while pip
# resolves the requirements.
COPY pyproject.toml README.md constraints.txt ./
RUN mkdir streams schemas producers tooling kpi \
    && for p in streams schemas producers tooling kpi; do touch $p/__init__.py; done \
    && /opt/venv/bin/pip install -c constraints.txt '.[worker]' \
    && /opt/venv/bin/pip uninstall -y backoffice-kpi \
    && rm -rf build *.egg-info streams schemas producers tooling kpi

# mypyc's own environment (mypy at the tested version; setuptools comes with the venv),
# which sees the product's dependencies through a .pth file: none of it enters /opt/venv.
RUN python -m venv /opt/mypyc \
    && /opt/mypyc/bin/pip install -c constraints.txt mypy \
    && /opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
       > "$(/opt/mypyc/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/product.pth"

COPY streams ./streams
COPY schemas ./schemas
COPY producers ./producers
COPY tooling ./tooling
COPY kpi ./kpi
# Compile in the source tree (pyproject.toml's mypy settings apply), then install the
# package and put the extensions and the digest stamp beside its installed sources, where
# streams.engine_build looks for them. A build that did not compile fails here: an empty
# stamp, or `kpi --version` saying anything but "engine compiled".
RUN /opt/mypyc/bin/python -m tooling.build \
    && test -s streams/_compiled.sha256 \
    && /opt/venv/bin/pip install --no-deps . \
    && site="$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")" \
    && find streams \( -name '*.so' -o -name _compiled.sha256 \) -exec cp --parents {} "$site/" \; \
    && cd / && /opt/venv/bin/kpi --version | tee /dev/stderr | grep -q "engine compiled"

FROM python:${PYTHON_VERSION}-slim-bookworm

# The worker's HTTP server binds every interface of the container (the default, 127.0.0.1,
# would be unreachable from outside it).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    KPI_WEB_HOST=0.0.0.0

COPY --from=builder /opt/venv /opt/venv

# Unprivileged; faust keeps a small data directory (<app id>-data) in the working directory.
# /var/lib/kpi holds the simulator's --state-file (a named volume in docker-compose.yml takes
# its owner from here).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin kpi \
    && mkdir /var/lib/kpi && chown kpi:kpi /var/lib/kpi
USER kpi
WORKDIR /home/kpi

EXPOSE 6066
# Liveness: /livez answers 200 while the process is alive and not stalled, also during a
# Redis outage the worker rides out (/readyz is for traffic, not for restarts). The slim
# image has no curl, so the probe is Python's urllib; any error or non-2xx is unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('KPI_WEB_PORT', '6066'), timeout=4)"]

CMD ["kpi", "worker"]
