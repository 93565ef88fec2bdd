# syntax=docker/dockerfile:1
#
# One image for every votestream subcommand (ingress, consumer, logs, all):
#   docker build -t ghcr.io/votestream/votestream:0.1.0 .
#   docker run --rm ghcr.io/votestream/votestream:0.1.0 logs
#
# Stage 1 compiles the release binary. The build needs no system protoc
# (build.rs uses the protoc-bin-vendored crate) but does need a C toolchain:
# rdkafka-sys builds its bundled librdkafka with ./configure and make, and
# libz-sys builds zlib, which LIBZ_SYS_STATIC=1 links statically. librdkafka
# is built with TLS and SASL/SCRAM against the system OpenSSL (rdkafka's `ssl`
# feature: libssl-dev and pkg-config, installed below in case the image lacks
# them); the runtime image's libssl3 (distroless cc includes it) serves it.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
ENV LIBZ_SYS_STATIC=1 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_DEBUG=none \
    CARGO_TERM_COLOR=never
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY . .
# The cache mounts keep the crate registry and compiled dependencies between
# builds; the binary is copied out of the cached target folder.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin votestream \
    && install -D -m 0755 target/release/votestream /out/votestream

# Stage 2: glibc, libgcc and OpenSSL's libraries only, no shell, no package
# manager; runs as the unprivileged user 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/votestream /usr/local/bin/votestream
USER 65532:65532
# Documentation only: ingress gRPC and HTTP, consumer HTTP, logs HTTP.
EXPOSE 50051 8080 9100 8081
ENTRYPOINT ["/usr/local/bin/votestream"]
CMD ["--help"]
