# syntax=docker/dockerfile:1
# Build: docker build -t auditproxy --build-arg VERSION=$(git describe --always) .
# Run:   docker run --rm -p 8080:8080 -p 9090:9090 -v auditproxy-data:/data auditproxy \
#          serve --upstream http://vllm:8000
# On a GPU server, add --gpus all (NVIDIA container toolkit) so events carry
# the GPU's NVML identity.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same script CI runs (TestReleaseBuildRecipe): one set of build flags.
RUN scripts/build-binary.sh /out/auditproxy "${VERSION}"

# A glibc base: the NVIDIA container toolkit injects libnvidia-ml.so into it.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data auditproxy \
    && mkdir -p /data && chown auditproxy /data
COPY --from=build /out/auditproxy /usr/local/bin/auditproxy
USER 10001
VOLUME /data
ENV AUDITPROXY_DATA_DIR=/data \
    AUDITPROXY_LISTEN=0.0.0.0:8080 \
    AUDITPROXY_ADMIN_LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
# Ready means the sidecar serves and its upstream answers /health (GET /readyz on
# the admin port); the image has no curl, so the binary asks.
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/auditproxy", "healthcheck", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/auditproxy"]
CMD ["serve"]
