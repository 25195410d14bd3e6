# Roost, built from this checkout, serving one app with `roost serve`.
#
#   docker build -t roost .
#   docker run --rm -p 8787:8787 -v roost-data:/data --stop-timeout 90 roost
#   curl localhost:8787/counter/apples/increment
#
# The app is ROOST_APP (default: the counter example) or the first argument:
#   docker run ... roost examples/chat
# Your own app: FROM this image, COPY it into /app, set ROOST_APP.
# Every setting is a ROOST_* variable or a flag (docs/deployment.md).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
# A virtual environment is copied whole into the runtime image: no pip, no
# build files there.  The wheels Roost needs (apsw, uvloop, httptools) are
# binary, so no compiler is needed.
RUN python -m venv /opt/roost
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/roost/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:${PYTHON_VERSION}-slim
# A fixed uid, so that a host directory mounted at /data can be given to it
# (chown 10001:10001 DIR).
RUN groupadd --system --gid 10001 roost \
    && useradd --system --uid 10001 --gid roost --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin roost \
    && mkdir /data \
    && chown roost:roost /data
COPY --from=build /opt/roost /opt/roost
COPY examples /app/examples
COPY deploy/healthcheck.py /opt/roost/healthcheck.py
WORKDIR /app
ENV PATH=/opt/roost/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROOST_APP=examples/counter.py \
    ROOST_HOST=0.0.0.0 \
    ROOST_PORT=8787 \
    ROOST_DATA_DIR=/data
# The data directory: one server at a time (Roost locks it).
VOLUME ["/data"]
EXPOSE 8787
USER roost
# SIGTERM is Roost's graceful stop (Docker's default signal, said for clarity);
# give it time with `docker run --stop-timeout 90` or compose's
# stop_grace_period, since Docker's own default of 10 s is shorter.
STOPSIGNAL SIGTERM
# No health endpoint: any HTTP answer on ROOST_PORT counts (see the script).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "/opt/roost/healthcheck.py"]
ENTRYPOINT ["roost", "serve"]
