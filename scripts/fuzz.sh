#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 20), without
# a sanitizer (`-s none`, which builds on the stable toolchain). Installs cargo-fuzz from
# crates.io if missing. Fails loudly if it cannot be installed or a target finds a crash;
# a crash input lands in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh                     # all targets
#   FUZZ_SECONDS=300 scripts/fuzz.sh decode_request
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io" >&2
    if ! cargo install --quiet --locked cargo-fuzz; then
        echo "fuzz: FAILED: cargo-fuzz could not be installed; the fuzz targets did not run" >&2
        exit 1
    fi
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -s none --release
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "fuzz: $target for ${seconds}s" >&2
    cargo fuzz run -s none --release "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>"corpus/$target.log" \
        || { tail -40 "corpus/$target.log" >&2; echo "fuzz: FAILED: $target" >&2; exit 1; }
    grep -E "stat::number_of_executed_units" "corpus/$target.log" \
        | sed "s/^/fuzz: $target: /" >&2 || true
done
echo "fuzz: ${#targets[@]} passed, 0 failed"
