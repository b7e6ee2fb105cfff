# lastwill in a container (README "Docker"). This repository's CI has no Docker: the image is not
# built there; tests/test_deployment.py runs its start command and its HEALTHCHECK with its ENV.
#
#   docker build -t lastwill .
#   docker run -d --name lastwill -p 1883:1883 -v lastwill-data:/data \
#       -e LASTWILL_ALLOW_ANONYMOUS=true lastwill          # or a password file, see the README

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md LICENSE /src/
COPY src /src/src
RUN pip install /src && rm -rf /src \
    && useradd --system --uid 1883 --user-group --home-dir /data --shell /usr/sbin/nologin lastwill \
    && mkdir /data && chown lastwill:lastwill /data && chmod 0700 /data

USER lastwill
WORKDIR /data
VOLUME ["/data"]

# Every setting can be changed with -e LASTWILL_<KEY>=... (docs/configuration.md) or a TOML file
# mounted and named by LASTWILL_CONFIG. Listening beyond loopback needs password_file, or
# allow_anonymous = true: start-up says so otherwise.
ENV LASTWILL_LISTEN=0.0.0.0:1883 \
    LASTWILL_DATA_DIR=/data \
    LASTWILL_ADMIN_LISTEN=127.0.0.1:8080
EXPOSE 1883

# `lastwill wills` asks the admin API (found from LASTWILL_ADMIN_LISTEN, with LASTWILL_ADMIN_TOKEN if
# set): exit status 0 when the broker's event loop answers, 1 otherwise. No MQTT connection, so
# nothing in the log every 30 s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["lastwill", "wills"]

# SIGTERM (docker stop): MQTT 5 clients get DISCONNECT 0x8B, wills of connected clients stay pending in /data
STOPSIGNAL SIGTERM
ENTRYPOINT ["lastwill"]
CMD ["serve"]
