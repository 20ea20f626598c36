# shardhub — see README.md. Every target works on a fresh machine with Go 1.26.
GO       ?= go
PKGS     ?= ./...
BIN      ?= bin/shardhub
ADDR     ?= :8080
BENCHTIME ?= 1s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@2025.1.1

.PHONY: all build run test race test-short bench lint vet fmt fmt-check clean interop-deps

all: build

## build: compile the shardhub binary into bin/
build:
	$(GO) build -trimpath -o $(BIN) ./cmd/shardhub

## run: start the server on $(ADDR), single node, nothing else to install
run: build
	./$(BIN) serve --addr $(ADDR)

## test: vet, format check, and every test with the race detector
test: vet fmt-check
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## race: the tests with the race detector only
race:
	$(GO) test -race -count=1 $(PKGS)

## test-short: the tests without the race detector, skipping the long ones
test-short:
	$(GO) test -short -count=1 $(PKGS)

## bench: the Go benchmarks (benchstat-compatible output)
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) $(PKGS)

## lint: go vet and staticcheck
lint: vet
	$(GO) run $(STATICCHECK) $(PKGS)

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
