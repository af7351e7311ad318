#!/usr/bin/env bash
# Every check CI runs: formatting, lints (native, and the library for the browser), all tests.
set -euo pipefail
cd "$(dirname "$0")"

echo "--- cargo fmt"
cargo fmt --all --check

echo "--- layers (no import cycles in src/, no file in src/ or matchbox-server/src/ over 600 lines)"
python3 .ci/layers.py

echo "--- cargo clippy (native, all targets)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "--- cargo clippy (wasm32, library and demo)"
cargo clippy -p bevy_peersync --target wasm32-unknown-unknown --locked -- -D warnings
cargo clippy -p bevy_peersync --example demo --target wasm32-unknown-unknown --locked -- -D warnings

echo "--- cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

echo "--- browser build of the demo (tests/integration/browser.rs loads it in Chromium)"
PROFILE=debug web/build.sh

echo "--- cargo test"
cargo test --workspace --locked

echo "--- all checks passed"
