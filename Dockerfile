# syntax=docker/dockerfile:1
# cloudwatch-publisher: a static musl binary on a pinned Alpine, run as UID/GID 65532.
#
# The tag scheme is semver plus the short git hash, as the FinFocus images use:
#   make image-tag          # prints e.g. v0.1.0-ae2a551
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=v0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE="$(git remote get-url origin)" \
#     -t <registry>/cloudwatch-publisher:v0.1.0-ae2a551 --push .
# docs/deployment.md has the whole procedure and what was verified without a Docker engine.

# Build stage: Rust on Alpine targets musl, whose binaries are static by default.
FROM rust:1.95.0-alpine3.22 AS build
# ring (rustls' crypto provider here) compiles a little C and assembly; nothing else is
# needed. Package versions follow the pinned Alpine release; exact apk pins break as soon as
# Alpine replaces a package.
# hadolint ignore=DL3018
RUN apk add --no-cache build-base
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release \
 && cp target/release/cloudwatch-publisher /cloudwatch-publisher \
 && readelf -d /cloudwatch-publisher > /tmp/dynamic \
 && if grep -q NEEDED /tmp/dynamic; then echo "not a static binary" >&2; exit 1; fi

# Runtime stage: CA certificates for TLS to CloudWatch and nothing else. Cron runs in UTC,
# so no tzdata. The agent writes no files: a read-only root filesystem works.
FROM alpine:3.22.2
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="cloudwatch-publisher" \
      org.opencontainers.image.description="Publishes FinFocus cost-plugin health and projected cost to Amazon CloudWatch" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The disk buffer's mount point, owned by the agent's user: a Docker named volume, and an
# ECS bind mount of the same path (through the VOLUME below), start with this ownership, so a
# non-root agent can write BUFFER_DIR there.
# hadolint ignore=DL3018
RUN apk add --no-cache ca-certificates \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/cloudwatch-publisher
COPY --from=build /cloudwatch-publisher /usr/local/bin/cloudwatch-publisher
VOLUME /var/lib/cloudwatch-publisher
USER 65532:65532
# Exec form: no shell is involved. The agent answers from its own /healthz (HEALTH_ADDR).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/cloudwatch-publisher", "healthcheck"]
# No arguments runs the schedule; `docker run <image> --once` runs one cycle.
ENTRYPOINT ["/usr/local/bin/cloudwatch-publisher"]
