# lbd: build, test, lint. `make test` is the test command CI runs (as root).
GO        ?= go
BIN       ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PREFIX    ?= /usr/local
SBINDIR   ?= $(PREFIX)/sbin
DESTDIR   ?=

.PHONY: all build test test-unit lint install-deps lab-binaries bench fuzz clean demo demo-down install deb

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/lbd ./cmd/lbd

## install: the binary, the systemd unit and haproxy drop-in, logrotate, an example /etc/default/lbd (kept if present), the cron job as an example
install: build
	install -D -m 0755 $(BIN)/lbd $(DESTDIR)$(SBINDIR)/lbd
	install -d $(DESTDIR)/etc/systemd/system/haproxy.service.d
	sed 's|/usr/local/sbin/lbd|$(SBINDIR)/lbd|g' hack/systemd/lbd.service > $(DESTDIR)/etc/systemd/system/lbd.service
	install -m 0644 hack/systemd/haproxy.service.d/10-lbd.conf $(DESTDIR)/etc/systemd/system/haproxy.service.d/10-lbd.conf
	install -D -m 0644 hack/logrotate/lbd $(DESTDIR)/etc/logrotate.d/lbd
	[ -e $(DESTDIR)/etc/default/lbd ] || install -D -m 0600 hack/default/lbd $(DESTDIR)/etc/default/lbd
	install -d $(DESTDIR)$(PREFIX)/share/lbd
	sed 's|/usr/local/sbin/lbd|$(SBINDIR)/lbd|g' hack/cron/lbd > $(DESTDIR)$(PREFIX)/share/lbd/cron.d-lbd
	@echo "daemon: edit /etc/default/lbd, then systemctl daemon-reload && systemctl enable --now lbd && systemctl restart haproxy"
	@echo "cron instead: cp $(PREFIX)/share/lbd/cron.d-lbd /etc/cron.d/lbd (not both)"

## deb: the Debian package $(BIN)/lbd_<version>_<arch>.deb (nFPM, a Go tool of hack/pkg): a static binary stamped with $(VERSION), the unit, logrotate, /etc/default/lbd, docs, the cron and haproxy examples
deb:
	VERSION=$(VERSION) GO=$(GO) hack/pkg/deb.sh $(BIN)

## install-deps: apt-get the Debian packages the tests need, download modules, build the lab's kube-apiserver (root)
install-deps:
	hack/install-deps.sh

## lab-binaries: build (once, cached) kube-apiserver and kubectl for the lab
lab-binaries:
	hack/k8s/build.sh

## test: installs what is missing (root), then unit tests and, as root, the end-to-end tests in network namespaces
test: install-deps
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

## fuzz: each fuzz target for $(FUZZTIME) (default 20s), one after the other: kubectl JSON, iptables-save, the haproxy services directory
FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./discovery
	$(GO) test -run '^$$' -fuzz '^FuzzParseSave$$' -fuzztime $(FUZZTIME) ./netfilter
	$(GO) test -run '^$$' -fuzz '^FuzzReadCfgs$$' -fuzztime $(FUZZTIME) ./haproxy

## demo: (root) start a lab in network namespaces, show lbd serving the notes' nginx service with iptables, then haproxy; leave it up for exploring
demo:
	$(GO) run ./hack/demo up

## demo-down: (root) remove the demo lab: its processes, the lbd-demo-* namespaces and /tmp/lbd-demo
demo-down:
	$(GO) run ./hack/demo down

clean:
	rm -rf $(BIN)
