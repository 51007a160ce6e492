# Multi-stage build: a static binary on a minimal, non-root image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY third_party ./third_party
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/gateway ./cmd/gateway

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gateway /usr/local/bin/gateway
USER nonroot:nonroot
EXPOSE 8080
ENV CREDGATE_LISTEN=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["serve", "--config", "/etc/credgate/config.yaml"]
