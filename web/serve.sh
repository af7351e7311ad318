#!/usr/bin/env bash
# Builds the browser demo and serves it from a lobby on port 3536: open http://127.0.0.1:3536/
# in two or more tabs (and/or run `cargo run --example demo`, which joins the same room).
set -euo pipefail
cd "$(dirname "$0")/.."
web/build.sh
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
echo "open http://127.0.0.1:3536/ (add ?room=NAME to pick a room)"
exec cargo run -p peersync-lobby --release -- --bind 0.0.0.0:3536 --static-dir "$target_dir/web"
