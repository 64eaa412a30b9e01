# cloudwatch-publisher: a static musl binary on a small Alpine runtime, run as non-root.
# Build: docker build -t cloudwatch-publisher .

FROM rust:1.95-alpine3.22 AS build
# ring (rustls' crypto provider here) compiles a little C and assembly.
RUN apk add --no-cache build-base
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --locked --release \
 && cp target/release/cloudwatch-publisher /cloudwatch-publisher

FROM alpine:3.22
RUN apk add --no-cache ca-certificates
COPY --from=build /cloudwatch-publisher /usr/local/bin/cloudwatch-publisher
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cloudwatch-publisher"]
