# credgate: make test runs everything CI runs; make bench prints gateway vs direct.
GO        ?= go
GOFLAGS   ?=
TEST_TIMEOUT ?= 20m

.PHONY: all build test unit e2e-deps browser-deps deb-deps chaos bench demo vet fmt clean

all: build

build:
	$(GO) build -o bin/gateway ./cmd/gateway

# Installs what the tests need (pinned npm packages under e2e/, Debian's
# chromium for the status page's browser test, redis-server and haproxy for
# the shared-state and sticky-routing tests), then runs every test with the
# race detector. E2E_REQUIRE_BROWSER makes the browser test fail rather
# than skip if chromium is still missing.
test: e2e-deps browser-deps deb-deps vet
	E2E_REQUIRE_BROWSER=1 $(GO) test -race -timeout $(TEST_TIMEOUT) -count=1 ./...
	cd e2e/bench && $(GO) test -race -timeout $(TEST_TIMEOUT) -count=1 ./...
	# The allocation budget of a call (issue 12), which the race detector skews.
	$(GO) test -timeout 5m -count=1 -run 'TestCallAllocationBudget' ./gateway

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

# The shared-state tests (issue 11) start redis-server processes of their
# own, and the sticky-routing test runs the HAProxy example of deploy/sticky.
deb-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# e2e/bench is a module of its own (go-sdk as released: see its go.mod).
vet:
	$(GO) vet ./...
	cd e2e/bench && $(GO) vet ./...

# BENCH_FLAGS passes flags to the driver, e.g. make bench BENCH_FLAGS="--calls-only --profile-variant stdio".
bench:
	cd e2e/bench && $(GO) run . $(BENCH_FLAGS)

# The issue 11 chaos suite at length (4 minutes, 24 agents) and the 2-minute
# run of three replicas renewing a rotating-refresh-token OAuth credential;
# `make test` runs short versions. Reports go to chaos-report/.
chaos: e2e-deps deb-deps
	CHAOS_LONG=1 CHAOS_OUT=$(CURDIR)/chaos-report $(GO) test -count=1 -v -timeout 30m -run 'TestChaos|TestReplicasOAuthRotatingRefresh' ./e2e/

demo:
	$(GO) run ./cmd/gateway --config configs/demo.yaml --log-format console

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
