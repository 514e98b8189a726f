# kvmnet: the two commands a newcomer runs on a fresh Debian machine, as root:
#   make demo   # the lab demo: NAT networks, leases, DNS, masquerade
#   make test   # every test (unit, real kernel, end to end)

GO      ?= go
BIN     := bin/kvmnet
# Packages the tests and the demo use. apt-get update runs once per machine
# (a stamp file remembers it), then apt-get install as root.
DEB_PKGS := nftables iproute2 iperf3 udhcpc dnsmasq-base dnsutils netcat-openbsd socat iputils-ping conntrack procps curl dsniff hping3 python3 kea-admin qemu-system-x86 kmod busybox tcpdump

.PHONY: all build deps demo test test-unit test-e2e test-kernel vet clean fuzz lint

all: build

build:
	$(GO) build -o $(BIN) ./cmd/kvmnet

deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: deps build
	./scripts/demo.sh

vet:
	$(GO) vet ./...
	./scripts/check-imports.sh
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1)

# Unit and real-kernel tests (the latter skip without root), then e2e in
# the lab. -p 1 for root tests: they create namespaces and processes.
test: deps build vet lint
	$(GO) test -count=1 ./...
	./scripts/fuzz.sh 100000x
	$(GO) test -count=1 -p 1 -tags e2e -timeout 20m ./test/e2e/...
	./scripts/test-deb.sh
	./scripts/test-kernel.sh

# The kernel test tier and the kernelfeatures tests in Debian's stock kernel
# under qemu (scripts/test-kernel.sh); RUN=regexp selects tests.
test-kernel: deps
	./scripts/test-kernel.sh '$(RUN)'

# Every Go fuzz target (YAML parser, API decoder, DHCP and DNS handlers)
# for FUZZTIME each; `make test` runs a short pass of the same, counted
# in inputs (100000x, about 10 s each here) rather than in seconds: a
# timed run that ends while a worker is busy fails with "context deadline
# exceeded", a failure of the fuzzer, not of the code.
FUZZTIME ?= 60s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# golangci-lint with .golangci.yml (forbidigo: netlink only in
# internal/kernel); built from the Go module proxy on first use (about two
# minutes of compiling on 2 cores), then a few seconds a run.
GOLANGCI_LINT_VERSION := v2.15.0
lint:
	command -v golangci-lint >/dev/null || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" golangci-lint run ./...

test-unit:
	$(GO) test -count=1 ./internal/model/... ./internal/plan/...

clean:
	rm -rf bin

# Packaging. Man pages and shell completions are generated from the
# commands themselves, into bin/man and bin/completions; `make deb` builds
# the Debian package into bin/deb (scripts/build-deb.sh, dpkg-deb only), and
# scripts/test-deb.sh checks it without changing this machine.
.PHONY: man completions deb

man: build
	rm -rf bin/man
	$(BIN) docs man bin/man

completions: build
	mkdir -p bin/completions
	$(BIN) completion bash >bin/completions/kvmnet
	$(BIN) completion zsh >bin/completions/_kvmnet
	$(BIN) completion fish >bin/completions/kvmnet.fish

deb:
	./scripts/build-deb.sh bin/deb
