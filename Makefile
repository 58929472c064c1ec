# Build tags: containers/image without the C libraries it does not need, and
# seccomp support in libcontainer (needs libseccomp-dev and pkg-config).
TAGS      := containers_image_openpgp containers_image_storage_stub seccomp
GOFLAGS_T := -tags '$(TAGS)'
GO        ?= go
export CGO_ENABLED := 1

# Settings for `make run`: development mode, a generated secret printed at
# start, loopback only, state under /var/lib/executor.
RUN_ENV ?= OPR_EXECUTOR_ENV=development OPR_EXECUTOR_LISTEN=127.0.0.1:9900

.PHONY: build check-go run test test-cgroup2 e2e unit bench bench-smoke fuzz soak race mutate lint demo clean release install uninstall

build: bin/executor bin/executor-init bin/executor-spawn

# The Go toolchain go.mod's go line asks for, or one line saying what is
# missing (scripts/check-go.sh). The build targets take it as an order-only
# prerequisite: it runs first every time without making anything out of date.
check-go:
	@GO='$(GO)' sh ./scripts/check-go.sh

# What `executor --version` says: the tag (or commit) this tree is at, the
# commit, and when it was built.
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS_V  := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)

bin/executor: $(shell find cmd api sandbox oci images netns storage -name '*.go' 2>/dev/null) go.mod go.sum | check-go
	$(GO) build $(GOFLAGS_T) -ldflags '$(LDFLAGS_V)' -o bin/executor ./cmd/executor

# PID 1 of every runtime, mounted into them: C, one thread, static (no libc
# needed there). tests/testenv.InitCFLAGS are these flags too.
INIT_CFLAGS := -static -O2 -Wall -Wextra -Werror -s
bin/executor-init: cmd/executor-init/src/executor-init.c
	@mkdir -p bin
	$(CC) $(INIT_CFLAGS) -o bin/executor-init cmd/executor-init/src/executor-init.c

# Starts the runtimes' containers for the daemon, which runs it beside its own
# binary: libcontainer re-executes the binary that starts a container as its
# init, and this small one starts in a fraction of the daemon's time.
bin/executor-spawn: $(shell find cmd/executor-spawn sandbox/container oci -name '*.go' 2>/dev/null) go.mod go.sum | check-go
	$(GO) build $(GOFLAGS_T) -trimpath -ldflags '-s -w' -o bin/executor-spawn ./cmd/executor-spawn

run: build
	$(RUN_ENV) ./bin/executor

# staticcheck is installed by .ci/run (go install, pinned) into GOPATH/bin.
STATICCHECK ?= $(shell $(GO) env GOPATH)/bin/staticcheck

lint: | check-go
	$(GO) vet $(GOFLAGS_T) ./...
	$(STATICCHECK) $(GOFLAGS_T) ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The whole suite: unit tests of every package, then the end-to-end tests that
# drive bin/executor over HTTP, then one run of every benchmark
# (bench-smoke). Needs root (containers, cgroups, bridges).
test: build lint
	$(GO) test $(GOFLAGS_T) -count=1 -timeout 25m ./...
	$(MAKE) --no-print-directory bench-smoke

# The end-to-end core again on a pure cgroup v2 host (this machine is hybrid
# v1): Debian's own kernel under qemu, its root built once per machine and
# cached under /var/cache/executor-guest (scripts/guest: the same guest
# scripts/systemd boots). Needs root; see scripts/cgroup2.
test-cgroup2: build
	./scripts/cgroup2/run.sh

unit: | check-go
	$(GO) test $(GOFLAGS_T) -count=1 $$($(GO) list ./... | grep -v /tests/e2e)

e2e: build
	$(GO) test $(GOFLAGS_T) -count=1 -timeout 25m -v ./tests/e2e/

# Cold start, warm latency and throughput through the executor vs straight
# to the runtime, the runtime's own boot, libcontainer start alone, rootless
# against root, the daemon with BENCH_RUNTIMES idle runtimes, network setup,
# runtime root preparation, and image pulls against skopeo+umoci. The raw
# output goes to the terminal and to bin/bench.out; bin/benchtable then prints
# one table of every figure beside its baseline from the same run (README:
# Benchmarks). bash for pipefail: a benchmark that fails fails make. -p 1:
# one package's benchmarks at a time, so they do not time each other.
BENCH_PKGS     := ./tests/e2e/ ./sandbox/ ./sandbox/container/ ./netns/ ./images/ ./cmd/executor-init/
BENCH_RUNTIMES ?= 1000
BENCH_OUT      ?= bin/bench.out

bench bench-smoke: SHELL := /bin/bash

bench: build bin/benchtable
	set -o pipefail; EXECUTOR_BIN='$(CURDIR)/bin/executor' EXECUTOR_BENCH_RUNTIMES=$(BENCH_RUNTIMES) $(GO) test $(GOFLAGS_T) -p 1 -count=1 -run '^$$' -bench . \
		-benchtime 20x -timeout 60m $(BENCH_PKGS) 2>&1 | tee '$(BENCH_OUT)'
	@echo; ./bin/benchtable <'$(BENCH_OUT)'

# Every benchmark once, with a few idle runtimes, through the table printer:
# proves they run (make test calls it); no timing is judged.
bench-smoke: build bin/benchtable
	set -o pipefail; EXECUTOR_BIN='$(CURDIR)/bin/executor' EXECUTOR_BENCH_RUNTIMES=20 $(GO) test $(GOFLAGS_T) -p 1 -count=1 -run '^$$' -bench . \
		-benchtime 1x -timeout 20m $(BENCH_PKGS) 2>&1 | tee bin/bench-smoke.out | ./bin/benchtable

# Every go test -fuzz target (request decoding, the PHP encoder, the
# multipart reply, DSNs, references and registries, layer unpacking) for
# FUZZTIME each (a duration, or a count of inputs: 300x), one after another
# (scripts/fuzz.sh); CI runs 300 inputs each.
# A failing input lands in the package's testdata/fuzz: commit it with the
# fix. Needs root (layer unpacking as the store does it).
FUZZTIME ?= 10s
fuzz: | check-go
	FUZZTIME='$(FUZZTIME)' bash scripts/fuzz.sh

# TestSoak for 10 minutes (200 clients over 50 runtimes, with creates,
# deletes, builds and maintenance; the daemon's RSS, threads and fds
# compared after warm-up and at the end) and TestLeakAudit for 1,000
# cycles (scripts/soak.sh; make test runs them at 60 s and 100 cycles).
soak: build
	./scripts/soak.sh

# The e2e suite (or RACE_RUN's tests) against a -race build of the daemon;
# any race it reports fails the run (scripts/race.sh). Slow: not in CI.
race: | check-go
	./scripts/race.sh

# Mutation testing (gremlins, pinned) of api, storage, oci, cmd/executor and
# sandbox's root-free tests on a snapshot of HEAD; fails when more than 10%
# of the mutants the tests reach survive (scripts/mutate.sh). Hours: not in CI.
mutate: | check-go
	./scripts/mutate.sh

bin/benchtable: $(wildcard tests/cmd/benchtable/*.go) | check-go
	$(GO) build -o bin/benchtable ./tests/cmd/benchtable

# A full round trip on a machine with no internet: build the test runtime
# image, serve it from a local registry, start the executor and run one
# execution with curl.
demo: build
	./scripts/demo.sh

# A release for hosts with neither Go nor libseccomp: dist/executor linked
# statically, libseccomp (libseccomp-dev's libseccomp.a) and the parts of
# glibc it uses included, the way runc's releases are: a static PIE, so that
# ASLR still applies, with the netgo and osusergo tags so that no glibc NSS
# code (which loads shared libraries at run time) is linked; executor-spawn,
# which starts the containers for it, the same way. executor-init is static
# already. SHA256SUMS lists the three. The recipe refuses a binary that
# still names an interpreter or a shared library.
DIST            ?= dist
RELEASE_TAGS    := $(TAGS) netgo osusergo
RELEASE_LDFLAGS := -s -w $(LDFLAGS_V) -linkmode external -extldflags -static-pie

release: | check-go
	mkdir -p '$(DIST)'
	rm -f '$(DIST)/executor' '$(DIST)/executor-init' '$(DIST)/executor-spawn' '$(DIST)/SHA256SUMS'
	$(GO) build -trimpath -buildmode=pie -tags '$(RELEASE_TAGS)' -ldflags '$(RELEASE_LDFLAGS)' -o '$(DIST)/executor' ./cmd/executor
	$(GO) build -trimpath -buildmode=pie -tags '$(RELEASE_TAGS)' -ldflags '$(RELEASE_LDFLAGS)' -o '$(DIST)/executor-spawn' ./cmd/executor-spawn
	$(CC) $(INIT_CFLAGS) -o '$(DIST)/executor-init' cmd/executor-init/src/executor-init.c
	@for f in '$(DIST)/executor' '$(DIST)/executor-init' '$(DIST)/executor-spawn'; do \
		if LC_ALL=C readelf -lW "$$f" | grep -q 'INTERP' || LC_ALL=C readelf -dW "$$f" | grep -q '(NEEDED)'; then \
			echo "release: $$f is not static:"; LC_ALL=C readelf -dW "$$f" | grep '(NEEDED)'; rm -f "$$f"; exit 1; \
		fi; \
	done
	cd '$(DIST)' && sha256sum executor executor-init executor-spawn >SHA256SUMS
	@cat '$(DIST)/SHA256SUMS'

# make install puts executor, executor-init and executor-spawn side by side in
# BINDIR (the daemon runs the two beside its own binary), the systemd unit
# with ExecStart pointing there, the example environment file as
# /etc/executor/executor.env (the path the unit reads) unless one exists, and
# the documentation: README, `executor --help` as text and as a man page.
# DESTDIR stages all of it for a package. The binaries are bin/'s, or
# another build's with BIN=dist (make release first).
#
# A new environment file is mode 0600 (it holds the API key) and gets a
# random OPR_EXECUTOR_SECRET when installed onto this host; staged under a
# DESTDIR, every host would share that key, so the secret is left empty there
# and the daemon refuses to start until one is set (GENERATE_SECRET=yes|no
# overrides).
#
# The --help text is made in a temporary directory (nothing is written to the
# tree, which root may not own), by the binary run with an empty environment
# under a timeout: a build without --help would start the daemon instead,
# which stops at once for want of a secret, and its output is refused.
PREFIX          ?= /usr/local
BINDIR          ?= $(PREFIX)/bin
DOCDIR          ?= $(PREFIX)/share/doc/executor
MANDIR          ?= $(PREFIX)/share/man
UNITDIR         ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/systemd/system,/etc/systemd/system)
ENVFILE         := /etc/executor/executor.env
GENERATE_SECRET ?= $(if $(DESTDIR),no,yes)
BIN             ?= bin

install: $(if $(filter bin,$(BIN)),build)
	@case '$(GENERATE_SECRET)' in yes|no) ;; *) echo "install: GENERATE_SECRET must be yes or no, not '$(GENERATE_SECRET)'"; exit 1;; esac
	@[ -x '$(BIN)/executor' ] && [ -x '$(BIN)/executor-init' ] && [ -x '$(BIN)/executor-spawn' ] || \
		{ echo "install: no $(BIN)/executor, $(BIN)/executor-init and $(BIN)/executor-spawn to install"; exit 1; }
	@doc=$$(mktemp -d) && trap 'rm -rf "$$doc"' EXIT && \
	env -i timeout 10 '$(BIN)/executor' --help >"$$doc/executor-help.txt" && grep -q '^Usage:' "$$doc/executor-help.txt" && \
	sh scripts/manpage.sh "$$doc/executor-help.txt" >"$$doc/executor.8" || { echo "install: '$(BIN)/executor --help' failed"; exit 1; }; \
	set -x && \
	install -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(UNITDIR)' '$(DESTDIR)$(DOCDIR)' '$(DESTDIR)$(MANDIR)/man8' && \
	install -m 0755 '$(BIN)/executor' '$(BIN)/executor-init' '$(BIN)/executor-spawn' '$(DESTDIR)$(BINDIR)/' && \
	sed 's|/usr/local/bin\b|$(BINDIR)|g' contrib/executor.service >'$(DESTDIR)$(UNITDIR)/executor.service.tmp' && \
	chmod 0644 '$(DESTDIR)$(UNITDIR)/executor.service.tmp' && \
	mv '$(DESTDIR)$(UNITDIR)/executor.service.tmp' '$(DESTDIR)$(UNITDIR)/executor.service' && \
	install -m 0644 README.md contrib/executor.env "$$doc/executor-help.txt" '$(DESTDIR)$(DOCDIR)/' && \
	install -m 0644 "$$doc/executor.8" '$(DESTDIR)$(MANDIR)/man8/executor.8'
	@if [ -e '$(DESTDIR)$(ENVFILE)' ]; then \
		echo "install: $(DESTDIR)$(ENVFILE) exists: kept as it is (the new example is $(DESTDIR)$(DOCDIR)/executor.env)"; \
	else \
		{ [ -d '$(DESTDIR)$(dir $(ENVFILE))' ] || install -d -m 0755 '$(DESTDIR)$(dir $(ENVFILE))'; } && \
		if [ '$(GENERATE_SECRET)' = yes ]; then \
			secret=$$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n') && [ $${#secret} -eq 32 ] || exit 1; \
			note="with a random OPR_EXECUTOR_SECRET"; \
		else \
			secret=; note="with OPR_EXECUTOR_SECRET empty: the daemon refuses to start until it is set"; \
		fi; \
		umask 077 && sed "s/^OPR_EXECUTOR_SECRET=.*/OPR_EXECUTOR_SECRET=$$secret/" contrib/executor.env >'$(DESTDIR)$(ENVFILE).tmp' && \
		chmod 0600 '$(DESTDIR)$(ENVFILE).tmp' && mv '$(DESTDIR)$(ENVFILE).tmp' '$(DESTDIR)$(ENVFILE)' && \
		echo "install: wrote $(DESTDIR)$(ENVFILE) $$note"; \
	fi
	@[ -n '$(DESTDIR)' ] || echo "install: done; systemctl daemon-reload && systemctl enable --now executor starts it"

# make uninstall removes what make install put in place but the environment
# file (it holds the API key and the host's settings) and the daemon's state
# in /var/lib/executor: both are the operator's to remove. It refuses while
# the service runs, which would be left without its binary.
uninstall:
	@if [ -z '$(DESTDIR)' ] && systemctl is-active --quiet executor 2>/dev/null; then \
		echo "uninstall: executor.service is running: systemctl disable --now executor first"; exit 1; fi
	rm -f '$(DESTDIR)$(BINDIR)/executor' '$(DESTDIR)$(BINDIR)/executor-init' '$(DESTDIR)$(BINDIR)/executor-spawn' '$(DESTDIR)$(UNITDIR)/executor.service' \
		'$(DESTDIR)$(MANDIR)/man8/executor.8'
	rm -f '$(DESTDIR)$(DOCDIR)/README.md' '$(DESTDIR)$(DOCDIR)/executor.env' '$(DESTDIR)$(DOCDIR)/executor-help.txt'
	rmdir '$(DESTDIR)$(DOCDIR)' 2>/dev/null || true
	@echo "uninstall: kept $(DESTDIR)$(ENVFILE) and /var/lib/executor (the daemon's state): remove them by hand if they should go"

clean:
	rm -rf bin dist
