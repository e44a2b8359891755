# directus-bridge: the commands a developer needs. See README.md.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build test unit lint e2e-up e2e-down demo fuzz bench soak

## build: the static binary, the same command the Dockerfile runs
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/directus-bridge ./cmd/directus-bridge

## test: lint, then unit and e2e tests (race detector) against a fresh stack
##       of real Directus 12 (PostgreSQL) + 11 (SQLite) + a real OIDC provider
test: lint build fuzz
	DIRECTUS_BRIDGE_REQUIRE_E2E=1 bash testdata/stack/with-stack.sh $(GO) test -race -count=1 -timeout 40m ./...

## unit: unit tests only (e2e tests skip without a stack outside CI)
unit:
	$(GO) test -race -count=1 ./...

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## fuzz: each fuzz target briefly; a finding is written to the package's
##       testdata/fuzz and fails the run. A count, not a duration: a timed
##       -fuzztime can end in a spurious "context deadline exceeded" on a busy
##       machine.
FUZZTIME ?= 50000x
fuzz:
	@for t in FuzzVerify FuzzParseRequest FuzzParseForm FuzzClaims FuzzUniqueMembers; do \
		$(GO) test ./bridge -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) || exit 1; done
	@for t in FuzzConfigCheck; do \
		$(GO) test ./cmd/directus-bridge -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) || exit 1; done
	@for t in FuzzRules FuzzGlob FuzzPath FuzzCondition; do \
		$(GO) test ./mapping -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) || exit 1; done

## e2e-up / e2e-down: a stack for a person, in /tmp/directus-bridge-stack
e2e-up:
	bash testdata/stack/stack.sh up
e2e-down:
	bash testdata/stack/stack.sh down

## demo: Directus 12 + the IdP (all the demo installs and starts), the bridge,
##       one real exchange printed step by step
demo: build
	bash testdata/stack/demo.sh

## bench: go test benchmarks, then the load benchmark against a fresh stack
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./bridge ./mapping
	bash testdata/stack/with-stack.sh $(GO) run ./cmd/bridge-bench

## soak: 5 minutes of mixed exchanges and reconcile runs; heap and goroutines before/after
soak:
	bash testdata/stack/with-stack.sh $(GO) run ./cmd/bridge-soak -duration 5m
