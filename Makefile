# Build tags: containers/image without the C libraries it does not need, and
# seccomp support in libcontainer (needs libseccomp-dev and pkg-config).
TAGS      := containers_image_openpgp containers_image_storage_stub seccomp
GOFLAGS_T := -tags '$(TAGS)'
GO        ?= go
export CGO_ENABLED := 1

# Settings for `make run`: development mode, a generated secret printed at
# start, loopback only, state under /var/lib/executor.
RUN_ENV ?= OPR_EXECUTOR_ENV=development OPR_EXECUTOR_LISTEN=127.0.0.1:9900

.PHONY: build run test test-cgroup2 e2e unit bench lint demo clean

build: bin/executor bin/executor-init

# What `executor --version` says: the tag (or commit) this tree is at, the
# commit, and when it was built.
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS_V  := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)

bin/executor: $(shell find cmd api sandbox oci images netns storage -name '*.go' 2>/dev/null) go.mod go.sum
	$(GO) build $(GOFLAGS_T) -ldflags '$(LDFLAGS_V)' -o bin/executor ./cmd/executor

# PID 1 of every runtime, mounted into them: static, no libc needed there.
bin/executor-init: cmd/executor-init/main.go
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/executor-init ./cmd/executor-init

run: build
	$(RUN_ENV) ./bin/executor

# staticcheck is installed by .ci/run (go install, pinned) into GOPATH/bin.
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck

lint:
	$(GO) vet $(GOFLAGS_T) ./...
	$(STATICCHECK) $(GOFLAGS_T) ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The whole suite: unit tests of every package, then the end-to-end tests that
# drive bin/executor over HTTP. Needs root (containers, cgroups, bridges).
test: build lint
	$(GO) test $(GOFLAGS_T) -count=1 -timeout 25m ./...

# The end-to-end core again on a pure cgroup v2 host (this machine is hybrid
# v1): Debian's own kernel under qemu, its root built once per machine and
# cached under /var/cache/executor-cgroup2. Needs root; see scripts/cgroup2.
test-cgroup2: build
	./scripts/cgroup2/run.sh

unit:
	$(GO) test $(GOFLAGS_T) -count=1 $$($(GO) list ./... | grep -v /tests/e2e)

e2e: build
	$(GO) test $(GOFLAGS_T) -count=1 -timeout 25m -v ./tests/e2e/

# Cold start, warm latency through the executor vs straight to the runtime,
# the runtime's own boot, libcontainer start alone, network setup, runtime
# root preparation, and image pulls against skopeo+umoci.
bench: build
	$(GO) test $(GOFLAGS_T) -run '^$$' -bench . -benchtime 20x -timeout 30m ./tests/e2e/ ./sandbox/container/ ./netns/ ./images/

# A full round trip on a machine with no internet: build the test runtime
# image, serve it from a local registry, start the executor and run one
# execution with curl.
demo: build
	./scripts/demo.sh

clean:
	rm -rf bin
