# syntax=docker/dockerfile:1
# directus-bridge container image: a static binary on distroless, non-root, no shell.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t directus-bridge .
#   docker run --rm directus-bridge version
#
# The go build line below is the Makefile's `build` recipe with its variables
# expanded (VERSION comes from the build argument). e2e/compose_test.go
# compares the two, and CI's `make test` runs `make build`, so the command this
# image builds with is built and tested on every CI run even though no Docker
# engine is available there.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first: they stay cached while only the sources change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o bin/directus-bridge ./cmd/directus-bridge
# The state folder, owned by distroless's nonroot user (65532): a named volume
# mounted there starts with this owner, so the bridge can create its state
# file and key (no shell in the final image to mkdir/chown at run time).
RUN mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/directus-bridge /directus-bridge
COPY --from=build --chown=65532:65532 /out/state /var/lib/directus-bridge
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/directus-bridge"]
# The configuration is mounted here (see docker-compose.yml); its `listen`
# must not be a loopback address inside a container (use 0.0.0.0:8080).
CMD ["serve", "-config", "/etc/directus-bridge/config.yaml"]
