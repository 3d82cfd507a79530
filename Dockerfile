# syncd: keeps a warehouse in sync with FullStory's event export.
#   docker build -t syncd .
#   docker run -v $PWD/syncd.toml:/etc/syncd/syncd.toml:ro -v syncd-data:/var/lib/syncd \
#     -e FULLSTORY_API_TOKEN_FILE=/run/secrets/fs_token -p 9108:9108 syncd
# Config: /etc/syncd/syncd.toml (SYNCD_CONFIG), every key overridable as SYNCD_<KEY> or a
# mounted secret via SYNCD_<KEY>_FILE. State and the DuckDB file live under /var/lib/syncd.

# -- build: a wheel and its dependencies in a virtualenv -------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/syncd
# every dependency from the lock file, each checked against its hash (`make lock` refreshes it)
COPY requirements.lock ./
RUN /opt/syncd/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY warehouses ./warehouses
# syncd itself, built with the locked setuptools: nothing unhashed is downloaded
RUN /opt/syncd/bin/pip install --no-deps --no-build-isolation .

# -- run: the virtualenv only, as an unprivileged user ---------------------------------------
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/syncd --create-home syncd \
    && mkdir -p /etc/syncd && touch /etc/syncd/syncd.toml
COPY --from=build /opt/syncd /opt/syncd
ENV PATH=/opt/syncd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SYNCD_CONFIG=/etc/syncd/syncd.toml \
    SYNCD_STATEDIR=/var/lib/syncd/state \
    SYNCD_TMPDIR=/var/lib/syncd/tmp \
    SYNCD_LOCAL_SAVEDIR=/var/lib/syncd/staged \
    SYNCD_DUCKDB_PATH=/var/lib/syncd/syncd.duckdb \
    SYNCD_METRICS_ADDRESS=0.0.0.0:9108 \
    SYNCD_LOGFORMAT=json
USER syncd
WORKDIR /var/lib/syncd
VOLUME ["/var/lib/syncd"]
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/livez', timeout=4)"]
ENTRYPOINT ["syncd"]
CMD ["run"]
