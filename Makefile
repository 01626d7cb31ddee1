# Keyward's everyday commands. `make test` is the whole suite, exactly as CI runs it.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: build test lint bench demo

build:
	go build -ldflags "$(LDFLAGS)" -o bin/keyward ./cmd/keyward

test:
	scripts/test.sh

lint:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	go vet ./...

bench:
	scripts/bench.sh

demo:
	go run ./cmd/keyward serve --demo
