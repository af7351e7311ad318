#!/usr/bin/env bash
# Builds the demo for the browser into <cargo target dir>/web: `PROFILE=debug web/build.sh` for a
# quicker, bigger build. Needs `rustup target add wasm32-unknown-unknown` and the wasm-bindgen CLI
# at the version of wasm-bindgen in Cargo.lock: `cargo install wasm-bindgen-cli --version 0.2.130`.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
if ! command -v wasm-bindgen >/dev/null; then
    wanted="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')"
    echo "wasm-bindgen is missing: cargo install wasm-bindgen-cli --version $wanted" >&2
    exit 1
fi
# Wherever cargo puts its builds (CARGO_TARGET_DIR, .cargo/config.toml), not necessarily ./target.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
out="$target_dir/web"
flags=()
[ "$profile" = release ] && flags+=(--release)
cargo build --example demo --target wasm32-unknown-unknown "${flags[@]}"
wasm-bindgen --target web --no-typescript --out-dir "$out" --out-name demo \
    "$target_dir/wasm32-unknown-unknown/$profile/examples/demo.wasm"
cp web/index.html "$out/"
echo "built $out ($profile)"
