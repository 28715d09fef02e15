# clickloop container image.
#
#   docker build -t clickloop .
#   docker run --rm -v "$PWD/my-config.json:/etc/clickloop/config.json:ro" \
#       -e CLICKLOOP_DB_PASSWORD=... -p 9400:9400 clickloop
#
# Stage 1 builds with Debian bookworm's toolchain and -dev packages and runs
# the unit tests; stage 2 is bookworm-slim with only the shared libraries the
# binary links, tini and curl (for the HEALTHCHECK). The same Debian release
# in both stages, so the libraries the binary was linked against are the ones
# it runs with.
#
# Runtime contract (docs/operations.md):
#   - the configuration is read from /etc/clickloop/config.json (mount it);
#     `${NAME}` references in it are expanded from the container environment;
#   - tini is PID 1 and forwards SIGTERM/SIGINT (drain and exit) and SIGHUP
#     (reload the configuration) to clickloop, and reaps zombies;
#   - the HEALTHCHECK asks GET /healthz on 127.0.0.1:9400: the configuration
#     must set "admin": {"listen": "0.0.0.0:9400"} (or 127.0.0.1:9400 when the
#     port need not be reached from outside the container);
#   - give the container a stop timeout longer than shutdown.drain_timeout
#     (default 30 s; Docker's default stop timeout is 10 s).
#
# apt packages are not pinned to versions (DL3008 ignored below): the base
# image tags fix the Debian release, and bookworm's security pocket replaces
# package versions, so exact pins would break the build after every update.

# ---------------------------------------------------------------- build
FROM debian:bookworm AS build

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        gcc libc6-dev meson ninja-build pkg-config \
        librdkafka-dev libuv1-dev libmariadb-dev libcurl4-openssl-dev \
        libjson-c-dev libhttp-parser-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# What the build and the unit tests read (test_config loads the two example
# configurations); .dockerignore keeps everything else out of the context.
COPY meson.build config.example.json ./
COPY include/ include/
COPY src/ src/
COPY test/ test/
COPY docs/examples/ docs/examples/

RUN meson setup --buildtype=release --prefix=/usr/local build \
    && meson compile -C build \
    && meson test -C build --suite unit --print-errorlogs \
    && meson install -C build --destdir /out

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="clickloop" \
      org.opencontainers.image.description="Clickstream events from Kafka into MariaDB, aggregated and indexed into Elasticsearch/OpenSearch" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"

# The runtime halves of the build stage's -dev packages (apt pulls in their
# own dependencies: OpenSSL, SASL, zstd, lz4...), CA certificates for TLS to
# Kafka and Elasticsearch, tini as PID 1, curl for the HEALTHCHECK. Then the
# unprivileged user the service runs as (fixed ids, for volume permissions and
# runAsUser policies).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        librdkafka1 libuv1 libmariadb3 libcurl4 libjson-c5 libhttp-parser2.9 \
        ca-certificates tini curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 clickloop \
    && useradd --system --uid 10001 --gid clickloop --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin clickloop \
    && mkdir -p /etc/clickloop

COPY --from=build /out/usr/local/bin/clickloop /usr/local/bin/clickloop
COPY config.example.json docs/configuration.md /usr/share/doc/clickloop/

USER 10001:10001
EXPOSE 9400
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "4", "--output", "/dev/null", "http://127.0.0.1:9400/healthz"]

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/clickloop"]
CMD ["--config", "/etc/clickloop/config.json"]
