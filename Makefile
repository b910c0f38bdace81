# The two commands a newcomer needs: `make run` and `make test`. Nothing else to install but cargo.

CARGO ?= cargo

.PHONY: run test bench lint fmt clean

## Build and start the service on the embedded default (SQLite file ./tether.db).
run:
	$(CARGO) run -p tether-api --bin tether

## Every test: unit, integration (SQLite always; PostgreSQL when TETHER_TEST_POSTGRES_URL is set),
## end-to-end against the real binary (including the official Python MCP SDK and Playwright driving
## Debian's chromium, installed into target/mcp-venv and target/browser-venv on first use), doctests.
test:
	tests/mcp_interop/setup.sh
	tests/schemathesis/setup.sh
	tests/browser/setup.sh
	$(CARGO) test --workspace --all-targets --no-fail-fast
	$(CARGO) test --workspace --doc

## Benchmarks (release build): the reconnect path, live monitoring with 1,000 and 10,000
## dashboards, the MCP endpoint (tools/call vs REST, session restore, heartbeats), then the cost
## curves and their plots (docs/bench; needs wrk and ../shared/peer). PostgreSQL columns need
## TETHER_TEST_POSTGRES_URL. See BENCHMARKS.md.
bench:
	$(CARGO) build --release -p tether-api -p tether-bench
	./target/release/tether-bench --tether ./target/release/tether
	ulimit -n 65536 2>/dev/null || true; ./target/release/tether-bench-ws --tether ./target/release/tether --pin
	./target/release/tether-bench-mcp --tether ./target/release/tether
	crates/bench/scripts/curves.sh

## What CI checks besides the tests: formatting, lints, and the docs (broken links are errors).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

fmt:
	$(CARGO) fmt --all
