# syntax=docker/dockerfile:1
# cloudwatch-publisher: a static musl binary on a pinned Alpine, run as UID/GID 65532.
#
# One build gives both architectures, cross-compiled on the build machine (no emulated Rust
# build); .github/workflows/release.yml does this on a vX.Y.Z tag. The tag scheme is semver
# plus the short git hash, as the FinFocus images use:
#   make image-tag          # prints e.g. v0.1.0-ae2a551
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=v0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE="$(git remote get-url origin)" \
#     -t <registry>/cloudwatch-publisher:v0.1.0-ae2a551 --push .
# docs/deployment.md has the whole procedure and what was verified without a Docker engine.

# Build stage: runs on the build machine's own platform ($BUILDPLATFORM), never emulated,
# and compiles for the image's ($TARGETARCH): natively when they match, else with
# cargo-zigbuild, whose zig is the cross C compiler and linker that ring's C and assembly
# need. Either way the result is a static musl binary. Rust on Alpine targets musl.
FROM --platform=$BUILDPLATFORM rust:1.95.0-alpine3.22 AS build
ARG TARGETARCH
# A failing readelf in a pipe must fail the build.
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]
# Package versions follow the pinned Alpine release; exact apk pins break as soon as Alpine
# replaces a package. ziglang's wheel is built for musl; cargo-zigbuild is compiled here
# (its PyPI wheels are glibc-only). Both pinned; this layer is cached across builds.
# hadolint ignore=DL3018
RUN apk add --no-cache build-base python3 py3-pip \
 && pip install --no-cache-dir --break-system-packages ziglang==0.14.1 \
 && cargo install --locked cargo-zigbuild --version 0.20.1 \
 && rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-${TARGETARCH} \
    case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH: $TARGETARCH (amd64 or arm64)" >&2; exit 1 ;; \
    esac \
 && if [ "$target" = "$(rustc -vV | sed -n 's/^host: //p')" ]; then build=build; else build=zigbuild; fi \
 && cargo "$build" --locked --release --target "$target" \
 && cp "target/$target/release/cloudwatch-publisher" /cloudwatch-publisher \
 && readelf -h /cloudwatch-publisher | grep Machine \
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
