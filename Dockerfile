# syntax=docker/dockerfile:1
# Build: docker build -t auditproxy .
# Run:   docker run --rm -p 8080:8080 -p 9090:9090 -v auditproxy-data:/data auditproxy \
#          serve --upstream http://vllm:8000
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# cgo stays on: NVML (go-nvml) is loaded with dlopen and needs lazy binding so
# the binary starts on drivers that lack newer NVML symbols.
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -extldflags=-Wl,-z,lazy" \
      -o /out/auditproxy ./cmd/auditproxy

# A glibc base: the NVIDIA container toolkit injects libnvidia-ml.so into it.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data auditproxy \
    && mkdir -p /data && chown auditproxy /data
COPY --from=build /out/auditproxy /usr/local/bin/auditproxy
USER auditproxy
VOLUME /data
ENV AUDITPROXY_DATA_DIR=/data \
    AUDITPROXY_LISTEN=0.0.0.0:8080 \
    AUDITPROXY_ADMIN_LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/auditproxy"]
CMD ["serve"]
