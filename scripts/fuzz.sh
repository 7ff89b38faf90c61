#!/usr/bin/env bash
# Fuzzes kquant's readers of untrusted files (GGUF, legacy and GGUF imatrix) with
# libFuzzer for a bounded time and fails on any crash, overflow, leak, timeout or
# out-of-memory. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
#
# Each target in fuzz/ starts from the seeds and past crashes in
# rust/kquant-core/tests/fuzz_corpus/ plus whatever earlier local runs found
# (fuzz/corpus/, not committed). A crashing input is copied to
# fuzz_corpus/regressions/, where tests/fuzz_regressions.rs replays it under plain
# `cargo test` once it has a line in that file's regressions! list.
#
# Only stable Rust is needed: libFuzzer's coverage instrumentation and ASan take -Z flags,
# which RUSTC_BOOTSTRAP=1 unlocks, and the flags are the ones `cargo fuzz build` passes,
# so cargo-fuzz itself is optional (`RUSTC_BOOTSTRAP=1 cargo fuzz run gguf` also works).
#
# Environment:
#   FUZZ_TARGETS    targets to run (default: all of gguf imatrix_legacy imatrix_gguf)
#   FUZZ_JOBS       targets run side by side (default: number of CPUs)
#   FUZZ_SEED       libFuzzer seed (default: random, printed, so a run can be repeated)
#   FUZZ_MAX_LEN    largest input in bytes (default 16384)
#   FUZZ_SANITIZER  address (default) or none (about twice the executions per second;
#                   kquant-core has no unsafe code, but ASan also enforces the
#                   per-allocation limit that catches allocation amplification)
#   FUZZ_KEEP_GOING 1 to keep fuzzing after a crash (libFuzzer fork mode) and collect
#                   every distinct crash of a long run instead of stopping at the first
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-60}
TARGETS=${FUZZ_TARGETS:-gguf imatrix_legacy imatrix_gguf}
JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
SEED=${FUZZ_SEED:-$((RANDOM * 32768 + RANDOM + 1))}
MAX_LEN=${FUZZ_MAX_LEN:-16384}
SANITIZER=${FUZZ_SANITIZER:-address}
CORPUS=rust/kquant-core/tests/fuzz_corpus
REGRESSIONS=$CORPUS/regressions

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-sanitizer-coverage-stack-depth
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0
    -Ccodegen-units=1
    -Cdebug-assertions
    --cfg fuzzing
)
[[ $SANITIZER != none ]] && flags+=("-Zsanitizer=$SANITIZER")

echo "== fuzz: building targets ($SANITIZER sanitizer)"
# --target keeps the instrumentation flags away from build scripts and proc macros.
RUSTC_BOOTSTRAP=1 RUSTFLAGS="${flags[*]} ${RUSTFLAGS:-}" \
    cargo build -q --manifest-path fuzz/Cargo.toml --release --target "$TRIPLE" --bins
BIN=fuzz/target/$TRIPLE/release

seeds_for() {
    case $1 in
        gguf) echo "$CORPUS/gguf $CORPUS/imatrix_gguf" ;;
        imatrix_legacy) echo "$CORPUS/imatrix_legacy" ;;
        imatrix_gguf) echo "$CORPUS/imatrix_gguf $CORPUS/gguf" ;;
        *) echo "unknown fuzz target $1" >&2; exit 2 ;;
    esac
}

run_target() {
    local t=$1
    local art=fuzz/artifacts/$t
    rm -rf "$art"
    mkdir -p "fuzz/corpus/$t" "$art"
    local extra=()
    if [[ ${FUZZ_KEEP_GOING:-0} == 1 ]]; then
        extra=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    fi
    # shellcheck disable=SC2046
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0} \
        "$BIN/$t" "fuzz/corpus/$t" $(seeds_for "$t") "$REGRESSIONS" \
        -max_total_time="$DURATION" -max_len="$MAX_LEN" -seed="$SEED" \
        -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=64 \
        -artifact_prefix="$art/" -print_final_stats=1 "${extra[@]}" \
        >"fuzz/artifacts/$t.log" 2>&1
}

echo "== fuzz: ${DURATION}s per target, $JOBS at a time, seed $SEED"
declare -A pid_of status_of
running=0
for t in $TARGETS; do
    seeds_for "$t" >/dev/null
    if ((running >= JOBS)); then
        wait -n || true
        running=$((running - 1))
    fi
    run_target "$t" &
    pid_of[$t]=$!
    running=$((running + 1))
done
for t in $TARGETS; do
    if wait "${pid_of[$t]}"; then status_of[$t]=0; else status_of[$t]=$?; fi
done

failed=0
for t in $TARGETS; do
    log=fuzz/artifacts/$t.log
    if [[ ${FUZZ_KEEP_GOING:-0} == 1 ]]; then
        execs=$({ grep -o '^#[0-9]*:' "$log" || true; } | tail -1 | tr -dc 0-9)
    else
        execs=$({ grep -ho 'stat::number_of_executed_units: [0-9]*' "$log" || true; } | awk '{s += $2} END {print s + 0}')
    fi
    found=()
    for f in fuzz/artifacts/"$t"/{crash,leak,oom,timeout}-*; do
        [[ -e $f ]] || continue
        sum=$(sha1sum "$f" | cut -d' ' -f1)
        known=$(for r in "$REGRESSIONS"/*; do
            if [[ -f $r ]]; then echo "$(sha1sum "$r" | cut -d' ' -f1) $r"; fi
        done | awk -v s="$sum" '$1 == s {print $2; exit}')
        if [[ -n $known ]]; then
            found+=("$known (already a known regression)")
            continue
        fi
        kind=${f##*/}
        kind=${kind%%-*}
        dest=$REGRESSIONS/$t-$kind-${sum:0:12}
        cp "$f" "$dest"
        found+=("$dest")
    done
    if ((${#found[@]} == 0 && status_of[$t] == 0)); then
        printf '   %-15s ok, %s executions, %s inputs in fuzz/corpus/%s\n' "$t" "${execs:-?}" \
            "$(find "fuzz/corpus/$t" -type f | wc -l)" "$t"
        continue
    fi
    failed=1
    printf '   %-15s FAILED (exit %s) after %s executions; log: %s\n' "$t" "${status_of[$t]}" "${execs:-?}" "$log"
    { grep -m1 -A30 -E '^(thread .* panicked|==[0-9]+==ERROR|ERROR: libFuzzer)' "$log" || tail -20 "$log"; } |
        grep -v '^ *at /rustc/' | head -20 | sed 's/^/      /' || true
    for f in "${found[@]}"; do
        if [[ $f == *"(already a known regression)" ]]; then
            echo "      input: $f"
            continue
        fi
        echo "      saved $f"
        "$BIN/$t" "$f" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=64 2>&1 |
            grep -m1 -A1 -E 'panicked|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' | sed 's/^/        /' || true
        echo "      reproduce: $BIN/$t $f"
        echo "      then add to the regressions! list in rust/kquant-core/tests/fuzz_regressions.rs:"
        echo "          <what_it_found> => \"${f##*/}\","
    done
done
exit $failed
