# The orchestrator (`mixsweep`) image: for running sweeps in-cluster (the Helm chart's sweep Job) or from
# a machine without a Rust toolchain. It needs no MLX: it validates configs with the MLX-free crate and
# starts runners elsewhere (Docker engine via DOCKER_HOST, Kubernetes Jobs).
#
#   docker build -f docker/orchestrator.Dockerfile -t REGISTRY/mixsweep:latest .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mixsweep && cp target/release/mixsweep /mixsweep

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /mixsweep /usr/local/bin/mixsweep
WORKDIR /work
ENTRYPOINT ["mixsweep"]
CMD ["--help"]
