# credgate: make test runs everything CI runs; make bench prints gateway vs direct.
GO        ?= go
GOFLAGS   ?=
TEST_TIMEOUT ?= 20m

.PHONY: all build test unit e2e-deps browser-deps bench demo vet fmt clean

all: build

build:
	$(GO) build -o bin/gateway ./cmd/gateway

# Installs what the e2e tests need (pinned npm packages under e2e/, Debian's
# chromium for the status page's browser test), then runs every test with the
# race detector. E2E_REQUIRE_BROWSER makes the browser test fail rather
# than skip if chromium is still missing.
test: e2e-deps browser-deps vet
	E2E_REQUIRE_BROWSER=1 $(GO) test -race -timeout $(TEST_TIMEOUT) -count=1 ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e-deps:
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
		echo "installing nodejs and npm (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	@if [ ! -d e2e/node_modules ] || [ e2e/package-lock.json -nt e2e/node_modules/.package-lock.json ]; then \
		cd e2e && npm ci --no-audit --no-fund --loglevel=error; \
	fi

browser-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		echo "installing chromium (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

vet:
	$(GO) vet ./...

bench:
	$(GO) run ./e2e/bench

demo:
	$(GO) run ./cmd/gateway --config configs/demo.yaml --log-format console

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
