# pushproxy: mailbox changes to unread-count badges, on NATS JetStream.
#
#   make run     run everything in one process on an embedded NATS server (data in ./data)
#   make test    vet, format check, unit tests (with -race), alert rule tests (promtool) and integration tests
#   make bench   throughput and latency benchmarks, as ratios to raw JetStream; the whole pipeline against its raw stages chained
#   make bench-scale  the chaos tests' cluster: event-to-push latency at offered rates, against the raw chain on the same cluster; a million users: dispatcher and ingest RSS, bytes per KV entry; 1 to 3 dispatchers
#   make fuzz    run every fuzz target for FUZZTIME each
#   make build   build all binaries into ./bin
#   make lint    go vet, gofmt check and staticcheck (installed by the Makefile)
#   make chaos   the long chaos run (test/chaos): kills processes of a real cluster, prints a summary table
#   make cluster the production layout on this machine: 3-node NATS, each daemon its own process (data in ./cluster)
#   make deploy-sync  copy deploy/nats/permissions.conf into the Kubernetes kustomization

GO        ?= go
# bash, so that a pipeline (make bench's | tee) fails when its first command does.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
FUZZTIME  ?= 20s
BENCHROUNDS ?= 5
DATA_DIR  ?= ./data
BIN       ?= ./bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS   := -X github.com/pushproxy/pushproxy/internal/version.Version=$(VERSION) -X github.com/pushproxy/pushproxy/internal/version.Commit=$(COMMIT)

# Packages with fuzz targets, as package:target pairs.
FUZZ_TARGETS = \
	./internal/sources/native:FuzzNative \
	./internal/sources/dovecot:FuzzDovecotOX \
	./internal/sources/dovecot:FuzzDovecotLua \
	./internal/sources/ews:FuzzEWS \
	./internal/sources/graph:FuzzGraph \
	./internal/sources/graph:FuzzBatch \
	./internal/sources/graph:FuzzLifecycle \
	./internal/sources/graph:FuzzSubscriptionRecords \
	./internal/sources/ews:FuzzGetFolder \
	./internal/sources/ews:FuzzSubscribe \
	./internal/sources/dovecot:FuzzDoveadmAnswers \
	./internal/sources/imap:FuzzUntagged \
	./internal/sources/imap:FuzzParseUsers \
	./internal/sources/imap:FuzzParseWatchList \
	./test/benchtable:FuzzParse \
	./internal/tokens:FuzzTokenResponse \
	./internal/events:FuzzEncode \
	./internal/dispatcher:FuzzDecodeEvent \
	./internal/tokens:FuzzVerify \
	./internal/relayclient:FuzzParseFault \
	./internal/providers:FuzzParseRetryAfter \
	./internal/providers/webpush:FuzzParseSubscription \
	./internal/unread:FuzzDecodeState \
	./internal/subscriptions:FuzzDecodeSubscription

.PHONY: run test unit alerts integration bench bench-scale fuzz build lint clean help chaos chaos-bin deploy-sync cluster

help:
	@sed -n 's/^#   //p' Makefile

# Builds ./bin once (incremental afterwards), then runs the standalone.
run: build
	$(BIN)/pushctl standalone --data-dir $(DATA_DIR)

test: lint unit alerts integration

unit:
	$(GO) test -race -count=1 -timeout 30m ./...
	cd test/deploy && $(GO) test -count=1 ./...

# Integration tests with real Dovecot and Chromium from Debian's packages.
# They install what they need when run as root and skip with a message otherwise.
integration:
	./test/dovecot/run.sh
	./test/browser/run.sh

# Each benchmark alternates rounds of pushproxy and of raw JetStream on the
# same embedded server and reports pushproxy's rate as a share of raw
# (batch-%-of-raw, %-of-raw), so that both see the same machine load, from
# each kind's median round; the relay's alternates with a bare HTTPS
# forwarder to the same push service (%-of-anchor). The last step runs the whole pipeline (pushctl standalone
# as its own process) under offered load and prints one table, then the
# same steps against the raw chain (its stages' anchors chained in one
# process) and compares them; give it flags with
# PIPELINEBENCH="-users 2000 -step 10s" (go run ./test/pipelinebench -h).
PIPELINEBENCH ?=

bench:
	@start=$$(date +%s); out=$$(mktemp); trap 'rm -f $$out' EXIT; \
	step() { echo "== bench $$1/6 ($$(( $$(date +%s) - start ))s so far): $$2"; }; \
	step 1 "ingest vs raw JetStream publish (batches) and a bare publishing handler (single events)" && \
	$(GO) test -run '^$$' -bench 'IngestVsRaw' -benchtime $(BENCHROUNDS)x ./internal/ingest | tee -a $$out && \
	step 2 "dispatcher vs raw durable consume" && \
	$(GO) test -run '^$$' -bench 'DispatcherVsRaw' -benchtime $(BENCHROUNDS)x ./internal/dispatcher | tee -a $$out && \
	step 3 "event-to-push latency" && \
	$(GO) test -run '^$$' -bench 'EventToPushLatency' -benchtime 1x ./internal/dispatcher | tee -a $$out && \
	step 4 "IMAP watcher memory per watched user" && \
	$(GO) test -run '^$$' -bench 'WatcherMemory' -benchtime 1x ./internal/sources/imap && \
	step 5 "relay vs a bare HTTPS forwarder to the same push service" && \
	$(GO) test -run '^$$' -bench 'RelayVsForward' -benchtime $(BENCHROUNDS)x ./internal/relay | tee -a $$out && \
	step 6 "whole pipeline (pushctl standalone) at offered rates" && \
	$(GO) run ./test/pipelinebench $(PIPELINEBENCH) | tee -a $$out && \
	echo "== bench done: 6 of 6 in $$(( $$(date +%s) - start ))s; each stage against its anchor:" && \
	$(GO) run ./test/benchtable < $$out

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x $$pkg; \
	done

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# Tools the Makefile installs, pinned, into ./bin/tools.
TOOLS       := $(abspath $(BIN))/tools
STATICCHECK := $(TOOLS)/staticcheck
STATICCHECK_VERSION ?= v0.8.2

$(STATICCHECK):
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

PROMTOOL := $(TOOLS)/promtool
PROMTOOL_VERSION ?= v0.316.0

$(PROMTOOL):
	GOBIN=$(TOOLS) $(GO) install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

# The Prometheus configuration and rules: valid, and each rule fires and
# clears in deploy/prometheus/alerts_test.yaml.
alerts: $(PROMTOOL)
	$(PROMTOOL) check config deploy/prometheus/scrape.yaml
	$(PROMTOOL) test rules deploy/prometheus/alerts_test.yaml

lint: $(STATICCHECK)
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(STATICCHECK) ./...

clean:
	rm -rf $(BIN)

# The split layout on one machine (deploy/local/cluster.sh): the
# nats-server binary of the version in go.mod, built into ./bin.
NATS_SERVER := $(abspath $(BIN))/nats-server
CLUSTER_DIR ?= ./cluster

$(NATS_SERVER): go.mod
	$(GO) build -o $(NATS_SERVER) github.com/nats-io/nats-server/v2

cluster: build $(NATS_SERVER)
	BIN=$(abspath $(BIN)) CLUSTER_DIR=$(CLUSTER_DIR) ./deploy/local/cluster.sh

# kustomize loads files only from its folder: deploy/kubernetes keeps a copy
# of the NATS permissions, which test/natsperms checks is identical.
deploy-sync:
	cp deploy/nats/permissions.conf deploy/kubernetes/nats-permissions.conf

# Chaos tests (test/chaos): a 3-node nats-server cluster, ingest, three
# dispatchers and a relay as OS processes, killed under load. chaos-bin
# builds the binaries they run; chaos runs the long version (dispatcher
# kills for 10 minutes, relay down 2 minutes, every scenario) and prints
# the summary table. The short version runs with the unit tests.
CHAOS_BIN      ?= $(BIN)/chaos
CHAOS_PARALLEL ?= 2
CHAOS_REPORT   ?= $(BIN)/chaos-summary.txt

chaos-bin:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(CHAOS_BIN)/ ./cmd/ingest ./cmd/dispatcher ./cmd/relay ./cmd/pushctl ./cmd/monitor ./test/pipelinebench
	$(GO) build -o $(CHAOS_BIN)/nats-server github.com/nats-io/nats-server/v2

# bench-scale runs the chaos tests' deployment (test/chaos). First
# (BenchmarkClusterLatency) with LATENCY_USERS users, one device each, it
# offers each of LATENCY_RATES events/s for LATENCY_SECONDS and prints the
# event-to-push latency against window + 50 ms; then its anchor, the raw
# chain (test/pipelinebench) on the same cluster, at LATENCY_RAW_RATES
# ("none": no anchor), and the ratio of the highest rates each holds.
# Then (BenchmarkScale)
# with SCALE_USERS users, one device each, it sends mail to
# SCALE_ACTIVE per cent of them at SCALE_RATE events/s and prints the
# dispatchers' and ingest's memory and the bytes per user state and per
# subscription, against their goals; then (BenchmarkScaleOut) the
# dispatchers' CPU per event with 1, 2 and 3 dispatchers and with 2 to 16
# partitions. It measures; it never fails on them.
SCALE_USERS  ?= 1000000
SCALE_ACTIVE ?= 10
SCALE_RATE   ?= 2000
LATENCY_USERS   ?= 100000
LATENCY_RATES   ?= 1000,2000,4000
LATENCY_SECONDS ?= 60
LATENCY_RAW_RATES ?= 2000,4000,6000,8000,10000

bench-scale: chaos-bin
	PUSHPROXY_CHAOS_BIN=$(abspath $(CHAOS_BIN)) PUSHPROXY_SCALE_USERS=$(SCALE_USERS) PUSHPROXY_SCALE_ACTIVE=$(SCALE_ACTIVE) \
		PUSHPROXY_SCALE_RATE=$(SCALE_RATE) PUSHPROXY_LATENCY_USERS=$(LATENCY_USERS) PUSHPROXY_LATENCY_RATES=$(LATENCY_RATES) \
		PUSHPROXY_LATENCY_SECONDS=$(LATENCY_SECONDS) PUSHPROXY_LATENCY_RAW_RATES=$(LATENCY_RAW_RATES) \
		$(GO) test -count=1 -timeout 60m -run '^$$' -bench '^Benchmark(ClusterLatency|Scale|ScaleOut)$$' -benchtime 1x ./test/chaos

chaos: chaos-bin
	@rm -f $(CHAOS_REPORT); \
	PUSHPROXY_CHAOS=long PUSHPROXY_CHAOS_BIN=$(abspath $(CHAOS_BIN)) PUSHPROXY_CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) \
		$(GO) test -count=1 -v -timeout 90m -parallel $(CHAOS_PARALLEL) -run '^TestChaos$$' ./test/chaos; \
	status=$$?; echo; cat $(CHAOS_REPORT) 2>/dev/null; exit $$status
