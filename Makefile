# Builds paster and the example plugin binaries from a fresh clone.
#   make build    bin/paster and bin/plugins/paster-plugin-*
#   make plugins  only the plugin binaries
#   make run      build, then bin/paster serve development.ini
#   make test     go test -race ./...
# bin/paster finds bin/plugins/ on its own (next to the executable).

GO ?= go
PLUGINS := $(wildcard examples/*/cmd/paster-plugin-*)

.PHONY: build plugins paster run test clean

build: paster plugins

paster:
	$(GO) build -o bin/paster ./cmd/paster

plugins:
	@mkdir -p bin/plugins
	$(GO) build -o bin/plugins/ $(addprefix ./,$(PLUGINS))

run: build
	bin/paster serve development.ini

test:
	$(GO) test -race ./...

clean:
	rm -rf bin
