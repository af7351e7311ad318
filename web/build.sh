#!/usr/bin/env bash
# Builds the demo for the browser into <cargo target dir>/web, with the size-tuned `wasm-release`
# profile of Cargo.toml, then `wasm-opt` when binaryen 132 or later is installed, and writes
# precompressed siblings (`.gz`, and `.br` with `brotli`) for the lobby to serve. Figures in
# BENCHMARKS.md ("Browser build"). `PROFILE=debug web/build.sh` for a quicker, bigger build (no
# wasm-opt, no compression), `PROFILE=release` for plain release; `WASM_OPT=-Os` picks other
# wasm-opt flags, `WASM_OPT=off` skips it. Needs `rustup target add wasm32-unknown-unknown` and
# the wasm-bindgen CLI at the version of wasm-bindgen in Cargo.lock:
# `cargo install wasm-bindgen-cli --version 0.2.130`.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-wasm-release}"
if ! command -v wasm-bindgen >/dev/null; then
    wanted="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')"
    echo "wasm-bindgen is missing: cargo install wasm-bindgen-cli --version $wanted" >&2
    exit 1
fi
# Wherever cargo puts its builds (CARGO_TARGET_DIR, .cargo/config.toml), not necessarily ./target.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
out="$target_dir/web"
case "$profile" in
    debug) flags=() ;;
    release) flags=(--release) ;;
    *) flags=(--profile "$profile") ;;
esac
cargo build --example demo --target wasm32-unknown-unknown "${flags[@]}"
# A sibling left by an earlier build would be served instead of this build's file.
rm -f "$out"/*.gz "$out"/*.br
bindgen=()
# Function names, a third of a release build (BENCHMARKS.md); a debug build keeps them.
[ "$profile" != debug ] && bindgen+=(--remove-name-section)
wasm-bindgen --target web --no-typescript "${bindgen[@]}" --out-dir "$out" --out-name demo \
    "$target_dir/wasm32-unknown-unknown/$profile/examples/demo.wasm"
cp web/index.html "$out/"
built="$profile"
if [ "$profile" != debug ]; then
    wasm_opt="${WASM_OPT:--Oz}"
    binaryen="$(wasm-opt --version 2>/dev/null | sed -n 's/^wasm-opt version \([0-9]*\).*/\1/p')"
    if [ "$wasm_opt" = off ]; then
        echo "wasm-opt skipped (WASM_OPT=off)"
    elif ! command -v wasm-opt >/dev/null; then
        echo "wasm-opt skipped: not installed (binaryen 132 or later, e.g. npm install -g binaryen)"
    elif [ "${binaryen:-0}" -lt 132 ]; then
        # Debian 12's binaryen 108 exports wasm-bindgen's externref table as the function table:
        # the page fails at start (BENCHMARKS.md). 132 is the oldest checked to work.
        echo "wasm-opt skipped: binaryen ${binaryen:-?} is older than 132, the oldest checked to work"
    else
        # The WebAssembly features rustc uses for wasm32-unknown-unknown.
        # shellcheck disable=SC2086 # WASM_OPT may hold several flags.
        wasm-opt $wasm_opt --enable-bulk-memory --enable-nontrapping-float-to-int \
            --enable-sign-ext --enable-mutable-globals --enable-reference-types \
            --enable-multivalue -o "$out/demo_bg.wasm" "$out/demo_bg.wasm"
        built="$built, wasm-opt $wasm_opt"
    fi
    gzip -9 -k -f "$out/demo_bg.wasm" "$out/demo.js"
    if command -v brotli >/dev/null; then
        brotli -q 11 -k -f "$out/demo_bg.wasm" "$out/demo.js"
    else
        echo "no .br files: brotli is not installed (apt-get install brotli)"
    fi
fi
# What this build is (tests/integration/browser.rs reads it).
echo "$built" >"$out/build.txt"
echo "built $out ($built)"
