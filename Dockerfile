# Keyward's image: one static binary (CGO_ENABLED=0: the SQLite driver is pure Go) on a distroless
# base, as a non-root user, with a read-only root filesystem in mind: all it writes is under
# /var/lib/keyward (the SQLite vault and its key file, when those are used; mount a volume there).
#   docker build -t keyward --build-arg VERSION=$(git describe --always) .
#   docker run --read-only -v keyward:/var/lib/keyward -p 8080:8080 keyward demo
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/keyward ./cmd/keyward

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyward /usr/local/bin/keyward
# distroless's nonroot user (65532); /var/lib/keyward is made for it by the volume's first mount.
USER 65532:65532
WORKDIR /var/lib/keyward
VOLUME ["/var/lib/keyward"]
ENV KEYWARD_SERVER_LISTEN=0.0.0.0:8080 \
    KEYWARD_VAULT_DSN=/var/lib/keyward/keyward.db \
    KEYWARD_VAULT_MASTER_KEY_FILE=/var/lib/keyward/keyward.key \
    KEYWARD_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["/usr/local/bin/keyward", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["serve"]
