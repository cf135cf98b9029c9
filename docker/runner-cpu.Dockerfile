# CPU runner image, FROM scratch: the mixsweep-runner binary, libmlx (from the mlx-cpu wheel) and every
# shared library they load, the dynamic loader, CA certificates (object storage over https) and /tmp.
# No Python, no shell, no package manager. Build it with docker/build-runner-cpu.sh, which assembles
# rootfs/ from a built runner (no registry needed: nothing is pulled).
#
# MLX compiles fused CPU kernels with a C++ compiler at run time; this image has none, so the train step
# runs uncompiled here (MLX_DISABLE_COMPILE=1: same results, slower on CPU). The CUDA image needs no
# compiler (MLX uses NVRTC) and keeps compilation on. When the build machine has OpenBLAS, the build
# script adds it and `ENV MIXSWEEP_BLAS` below (the runner preloads it over the wheel's reference BLAS).
FROM scratch
COPY rootfs/ /
ENV PATH=/opt/mixsweep/bin \
    LD_LIBRARY_PATH=/opt/mixsweep/lib \
    HOME=/tmp \
    MIXSWEEP_CACHE=/tmp/mixsweep-cache \
    MLX_DISABLE_COMPILE=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /tmp
HEALTHCHECK --interval=5m --timeout=60s --start-period=2m CMD ["/opt/mixsweep/bin/mixsweep-runner", "smoke", "--device", "cpu"]
ENTRYPOINT ["/opt/mixsweep/bin/mixsweep-runner"]
CMD ["smoke", "--device", "cpu"]
