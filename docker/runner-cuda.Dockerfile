# CUDA runner image: NVIDIA's CUDA 13 runtime, the MLX CUDA 13 wheel's libraries, and mixsweep-runner.
# No Python at run time: the wheels are only unpacked in a build stage.
#
#   docker build -f docker/runner-cuda.Dockerfile -t REGISTRY/mixsweep-runner:cuda .
#
# It cannot be built on our development machines (no registry to pull the bases from); see
# docker/README.md. The runner is built against the mlx-cpu wheel's headers (same MLX version and C++
# API) and runs against the CUDA wheel's libmlx, found through LD_LIBRARY_PATH.
ARG MLX_VERSION=0.32.2

FROM rust:1.95-bookworm AS build
ARG MLX_VERSION
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
RUN pip3 install --break-system-packages "mlx-cpu==${MLX_VERSION}" "mlx==${MLX_VERSION}"
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mixsweep-runner && cp target/release/mixsweep-runner /mixsweep-runner

FROM python:3.12-slim AS wheels
ARG MLX_VERSION
RUN pip download --no-deps --only-binary=:all: -d /whl "mlx-cuda-13==${MLX_VERSION}" \
 && python3 -m zipfile -e /whl/mlx_cuda_13-*.whl /unpacked \
 && mkdir -p /mlx/lib && cp -a /unpacked/mlx/lib/. /mlx/lib/ \
 && if [ -d /unpacked/mlx_cuda_13.libs ]; then cp -a /unpacked/mlx_cuda_13.libs/. /mlx/lib/; fi

FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
COPY --from=wheels /mlx/lib/ /opt/mixsweep/lib/
COPY --from=build /mixsweep-runner /opt/mixsweep/bin/mixsweep-runner
ENV PATH=/opt/mixsweep/bin:$PATH \
    LD_LIBRARY_PATH=/opt/mixsweep/lib:$LD_LIBRARY_PATH \
    HOME=/tmp \
    MIXSWEEP_CACHE=/tmp/mixsweep-cache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /tmp
HEALTHCHECK --interval=5m --timeout=120s --start-period=3m CMD ["mixsweep-runner", "smoke"]
ENTRYPOINT ["mixsweep-runner"]
CMD ["smoke"]
