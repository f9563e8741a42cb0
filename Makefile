# lbd: build, test, lint. `make test` is the test command CI runs (as root).
GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build test test-unit lint install-deps lab-binaries bench clean demo demo-down

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/lbd ./cmd/lbd

## install-deps: apt-get the Debian packages the tests need, download modules, build the lab's kube-apiserver (root)
install-deps:
	hack/install-deps.sh

## lab-binaries: build (once, cached) kube-apiserver and kubectl for the lab
lab-binaries:
	hack/k8s/build.sh

## test: unit tests and, as root, the end-to-end tests in network namespaces
test: lab-binaries
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

## test-unit: only the tests that need neither root nor the lab
test-unit:
	$(GO) test -count=1 -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## bench: the benchmarks whose figures the README quotes
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./discovery ./store ./netfilter ./haproxy

## demo: (root) start a lab in network namespaces, show lbd serving the notes' nginx service with iptables, then haproxy; leave it up for exploring
demo:
	$(GO) run ./hack/demo up

## demo-down: (root) remove the demo lab: its processes, the lbd-demo-* namespaces and /tmp/lbd-demo
demo-down:
	$(GO) run ./hack/demo down

clean:
	rm -rf $(BIN)
