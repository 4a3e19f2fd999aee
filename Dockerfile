# One image for every cluster-mode role (Ray head, Ray worker, the Ray node that runs `paynode
# actors`, `paynode api`): all Ray nodes of a cluster must run the same Ray and Python versions.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PAYNODE_DATA_DIR=/data

# No compiler: every dependency ships a manylinux wheel for CPython 3.11 (ray, duckdb, msgspec,
# uvloop, psycopg[binary], pgserver, ...), on linux/amd64; pgserver has none for arm64 Linux, hence
# `platform: linux/amd64` in docker-compose.yml. The dependencies get their own layer, so a code
# change does not reinstall Ray.
COPY pyproject.toml /tmp/src/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md /tmp/src/
COPY domain /tmp/src/domain
COPY node /tmp/src/node
COPY actors /tmp/src/actors
COPY storage /tmp/src/storage
COPY api /tmp/src/api
COPY benchmarks /tmp/src/benchmarks
COPY sim /tmp/src/sim
RUN pip install --no-deps /tmp/src && rm -rf /tmp/src

# A fixed uid: every container of the deployment shares the keyring volume, and the keyring file
# is 0600, so they must all be the same user. /data and /keyring exist (owned by that user) before
# a named volume is mounted on them, so Docker initialises the volumes with that ownership.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin paynode \
    && mkdir -p /app /data /keyring \
    && chown paynode:paynode /app /data /keyring \
    && chmod 0700 /data /keyring

USER paynode
WORKDIR /app
# No VOLUME: docker-compose.yml mounts the `data` volume on the actors service only; a VOLUME here
# would give every other container (Ray head, workers, API) an anonymous volume nobody uses.
EXPOSE 8000

# Each service of docker-compose.yml gives its own command (see there).
CMD ["paynode", "--help"]
