#!/usr/bin/env bash
# Run each fuzz target in fuzz/ for a bounded time with libFuzzer (cargo-fuzz, the
# pinned nightly), from its seeds (fuzz/seeds/<target>) and the corpus earlier runs left
# on this machine (fuzz/corpus/<target>, not committed), with its dictionary
# (fuzz/dicts/<target>.dict). Exits non-zero on the first crash, panic, input slower than
# 10 s or over 2 GiB of memory; the reproducer is in fuzz/artifacts/<target>/, and
#   cargo +nightly-2026-05-20 fuzz run <target> fuzz/artifacts/<target>/<file>
# replays it.
#   hack/fuzz.sh [target]...        FUZZ_SECONDS=<per target, default 30>
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The BPF build's nightly (hack/setup.sh BPF_NIGHTLY): one pinned nightly on the machine.
NIGHTLY="nightly-2026-05-20"
# Keep in step with hack/setup.sh.
CARGO_FUZZ_VERSION="0.13.2"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"

if ! cargo fuzz --version 2>/dev/null | grep -q "${CARGO_FUZZ_VERSION}"; then
    echo "==> installing cargo-fuzz ${CARGO_FUZZ_VERSION}"
    cargo install cargo-fuzz --version "${CARGO_FUZZ_VERSION}" --locked
fi

cd "$REPO/fuzz"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || mapfile -t targets < <(cargo +"$NIGHTLY" fuzz list)

echo "==> building ${targets[*]}"
for t in "${targets[@]}"; do
    cargo +"$NIGHTLY" fuzz build "$t"
done

passed=0
for t in "${targets[@]}"; do
    echo "==> fuzzing $t for ${SECONDS_PER_TARGET}s"
    mkdir -p "corpus/$t"
    dict=()
    [ -f "dicts/$t.dict" ] && dict=("-dict=dicts/$t.dict")
    cargo +"$NIGHTLY" fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 "${dict[@]}"
    passed=$((passed + 1))
done
# In cargo's words, so that hack/test.sh counts the targets.
echo "test result: ok. ${passed} passed; 0 failed; 0 ignored"
