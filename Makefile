# shardhub — see README.md. Every target works on a fresh machine with Go 1.26.
GO       ?= go
PKGS     ?= ./...
BIN      ?= bin/shardhub
ADDR     ?= :8080
BENCHTIME ?= 1s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run cluster test race test-short bench bench-1m bench-real lint vet fmt fmt-check clean interop-deps fuzz

all: build

# The commit, linked into the binary so that `shardhub version` and every report
# name it even where the build info has no VCS stamp (GOFLAGS=-buildvcs=false).
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
DIRTY    ?= $(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true)
LDFLAGS  ?= -X github.com/shardhub/shardhub/loadtest/report.linkedRevision=$(REVISION) \
            -X github.com/shardhub/shardhub/loadtest/report.linkedDirty=$(DIRTY)

## build: compile the shardhub binary into bin/
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/shardhub

## run: start the server on $(ADDR), single node, nothing else to install
run: build
	./$(BIN) serve --addr $(ADDR)

## cluster: a redis-server (no persistence) on $(CLUSTER_REDIS_PORT) and $(CLUSTER_N) instances
## sharing $(ADDR) with SO_REUSEPORT; Ctrl-C stops them all
CLUSTER_N          ?= 4
CLUSTER_REDIS_PORT ?= 6390
CLUSTER_FLAGS      ?= --history-prefix prices.
cluster: build
	@command -v redis-server >/dev/null || { echo "make cluster needs redis-server (apt-get install redis-server)"; exit 1; }
	@set -u; pids=""; dir=$$(mktemp -d); \
	stop() { trap - INT TERM EXIT; echo; echo "stopping cluster"; kill $$pids 2>/dev/null; wait $$pids 2>/dev/null; rm -rf "$$dir"; }; \
	trap stop INT TERM EXIT; \
	redis-server --port $(CLUSTER_REDIS_PORT) --bind 127.0.0.1 --save "" --appendonly no --dir "$$dir" --loglevel warning & pids="$$!"; \
	for t in 1 2 3 4 5 6 7 8 9 10; do redis-cli -p $(CLUSTER_REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.2; done; \
	for i in $$(seq 1 $(CLUSTER_N)); do \
	  ./$(BIN) serve --addr $(ADDR) --reuseport --redis redis://127.0.0.1:$(CLUSTER_REDIS_PORT)/0 --instance-id node$$i $(CLUSTER_FLAGS) & pids="$$pids $$!"; \
	done; \
	echo "cluster: redis on 127.0.0.1:$(CLUSTER_REDIS_PORT), $(CLUSTER_N) instances on $(ADDR) (GET /api/cluster lists them); Ctrl-C stops all"; \
	wait

## test: vet, format check, and every test with the race detector; skipped tests
## are listed at the end (gotestsum's summary), so a missing redis-server,
## node or chromium shows
GOTESTSUM ?= gotest.tools/gotestsum@v1.13.0
test: vet fmt-check
	$(GO) run $(GOTESTSUM) --format pkgname-and-test-fails -- -race -count=1 -timeout 15m $(PKGS)

## race: the tests with the race detector only
race:
	$(GO) test -race -count=1 $(PKGS)

## test-short: the tests without the race detector, skipping the long ones
test-short:
	$(GO) test -short -count=1 $(PKGS)

## bench: the Go benchmarks (benchstat-compatible output)
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) $(PKGS)

## bench-1m: one million virtual connections in one engine; report in reports/
bench-1m: build
	@mkdir -p reports
	./$(BIN) bench --virtual --conns 1000000 --json reports/bench-1m.json --html reports/bench-1m.html

## bench-real: 19,000 loopback sockets: shardhub vs the raw write ceiling vs a naive hub
BENCH_REAL_FLAGS ?= --conns 19000 --rate 200 --duration 5s
bench-real: build
	@mkdir -p reports
	./$(BIN) bench --real $(BENCH_REAL_FLAGS) --json reports/bench-real.json --html reports/bench-real.html

## fuzz: every fuzz target for FUZZTIME each (the seed corpora also run in make test)
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	    echo "== $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; \
	done

## lint: go vet, staticcheck and a go.mod/go.sum tidiness check
lint: vet
	$(GO) run $(STATICCHECK) $(PKGS)
	$(GO) mod tidy -diff

vet:
	$(GO) vet $(PKGS)

## fmt: format the code
fmt:
	gofmt -w .

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## interop-deps: install the non-Go WebSocket client used by the interop tests (node ws)
interop-deps:
	cd engine/server/testdata/interop && npm install --no-audit --no-fund --silent

clean:
	rm -rf bin

## loadtest-30k: 30,000 real connections: 2 servers (:8081, :8082), 2 load-generator workers, source IPs 127.0.0.2-60 (docs/benchmarks.md)
LOADTEST_RATE ?= 2
LOADTEST_DURATION ?= 20s
.PHONY: loadtest-30k
loadtest-30k: build
	@./$(BIN) serve --addr 127.0.0.1:8081 --log-level warn & s1=$$!; \
	./$(BIN) serve --addr 127.0.0.1:8082 --log-level warn & s2=$$!; \
	trap 'kill $$s1 $$s2 2>/dev/null' EXIT INT TERM; sleep 1; \
	./$(BIN) loadtest --workers 2 --conns 30000 \
	  --url ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws --source-ips 127.0.0.2-127.0.0.60 \
	  --rate $(LOADTEST_RATE) --duration $(LOADTEST_DURATION) --ready-match '"type":"welcome"' \
	  --progress-every 5s --out bin/loadtest-30k.json

## loadtest-70k-cluster: 70,000 real connections over 4 instances sharing 127.0.0.1:18090 (SO_REUSEPORT) and a
## redis-server on 6391; broadcasts published to one instance reach all (docs/benchmarks.md, "Redis cluster")
CLUSTER_LT_RATE ?= 2
.PHONY: loadtest-70k-cluster
loadtest-70k-cluster: build
	@command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
	@set -u; dir=$$(mktemp -d); \
	redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly no --dir "$$dir" --loglevel warning & pids="$$!"; \
	trap 'kill $$pids 2>/dev/null; wait $$pids 2>/dev/null; rm -rf "$$dir"' EXIT INT TERM; \
	for t in 1 2 3 4 5 6 7 8 9 10; do redis-cli -p 6391 ping >/dev/null 2>&1 && break; sleep 0.2; done; \
	for i in 1 2 3 4; do \
	  ./$(BIN) serve --addr 127.0.0.1:18090 --reuseport --redis redis://127.0.0.1:6391/0 --instance-id node$$i --log-level warn & pids="$$pids $$!"; \
	  spids="$${spids:-} --server-pid $$!"; \
	done; sleep 2; \
	./$(BIN) loadtest --workers 5 --conns 70000 --url ws://127.0.0.1:18090/ws --source-ips 127.0.0.2-127.0.0.120 $$spids \
	  --rate $(CLUSTER_LT_RATE) --duration 20s --publish-to first --ready-match '"type":"welcome"' \
	  --ramp-timeout 120s --progress-every 10s --out bin/loadtest-70k-cluster.json; \
	curl -s 127.0.0.1:18090/api/cluster; echo

## soak: minutes of client churn on 3 instances with Redis killed and restarted twice, beside a numbered stream
## checked message by message; then goroutines, heap, open files and Redis keys must be back to baseline and every
## broker's ledger must close (not in CI; SOAK_DURATION=15m for the figures in docs/operations.md)
SOAK_DURATION ?= 5m
SOAK_WORKERS  ?= 12
.PHONY: soak
soak:
	$(GO) test -tags soak -run '^TestSoak$$' -count=1 -v -timeout 90m ./engine/redisbroker/ \
	  -soak.duration=$(SOAK_DURATION) -soak.workers=$(SOAK_WORKERS)
