#!/usr/bin/env bash
# Runs every fuzz target for a bounded time; exits non-zero if any target crashed.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]     (default 60; CI runs 10, the long pass 600 or more)
#
# Environment:
#   CARGO_TARGET_DIR      the fuzz build, working corpora and crash files go under
#                         ${CARGO_TARGET_DIR:-$HOME/.cache/pinfold-target}/fuzz, outside the
#                         clone, so repeated runs reuse the instrumented build and grow
#                         the same corpora
#   PINFOLD_FUZZ_MODE     nightly | stable: force a toolchain (default: nightly when
#                         `cargo +nightly` works)
#   PINFOLD_FUZZ_TARGETS  space-separated subset of targets to run (default: all)
#
# Nightly builds with AddressSanitizer; stable cannot (sanitizers are nightly-only), so
# it builds with `--sanitizer none`: coverage-guided fuzzing still works and panics,
# overflow checks and debug assertions still fire; only memory errors (in C code such as
# SQLite, or in dependencies' unsafe Rust) would go unseen. Either way the build is release with debug
# assertions on (cargo-fuzz's default).
set -euo pipefail

secs="${1:-60}"
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
# Only the fuzz build sees this target directory; the main workspace keeps its own.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/pinfold-target}/fuzz"
mkdir -p "$CARGO_TARGET_DIR"

# Largest input per target: a little past each parser's own cap where the cap is small
# (so the cap itself is exercised), otherwise enough for every real case; longer inputs
# only slow the mutator down.
declare -A max_len=(
  [manifest]=16384
  [bundle]=65536
  [net_codec]=65536
  [net_ad]=33792
  [net_receipt]=16384
  [net_transfer]=4096
  [tlog_note]=16384
  [tlog_entry]=17408
  [tlog_proof]=8192
  [tlog_verifier]=8192
  [tlog_witness]=8192
  [registry_http]=16384
)
all=(manifest bundle net_codec net_ad net_receipt net_transfer tlog_note tlog_entry tlog_proof
  tlog_verifier tlog_witness registry_http)
read -r -a targets <<<"${PINFOLD_FUZZ_TARGETS:-${all[*]}}"
for t in "${targets[@]}"; do
  [ -n "${max_len[$t]:-}" ] || { echo "unknown fuzz target: $t" >&2; exit 2; }
done

mode="${PINFOLD_FUZZ_MODE:-}"
if [ -z "$mode" ]; then
  if cargo +nightly --version >/dev/null 2>&1; then mode=nightly; else mode=stable; fi
fi
case "$mode" in
  nightly) cargo=(cargo +nightly); sanitizer=address ;;
  stable) cargo=(cargo); sanitizer=none ;;
  *) echo "PINFOLD_FUZZ_MODE must be nightly or stable" >&2; exit 2 ;;
esac
echo "fuzz mode: $mode ($("${cargo[@]}" --version)), sanitizer: $sanitizer"
echo "fuzz target dir: $CARGO_TARGET_DIR"

# The committed lock file must already hold every dependency (CI must not resolve anew).
"${cargo[@]}" fetch --locked --manifest-path "$fuzz_dir/Cargo.toml" >/dev/null
# One build for every target, before any runs, so a compile error fails fast.
(cd "$fuzz_dir" && "${cargo[@]}" fuzz build --fuzz-dir . --sanitizer "$sanitizer" \
  --debug-assertions --target-dir "$CARGO_TARGET_DIR")

# cargo-fuzz builds for the host triple, under a directory named after it.
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$triple/release"

failed=()
for t in "${targets[@]}"; do
  corpus="$CARGO_TARGET_DIR/corpus/$t"
  artifacts="$CARGO_TARGET_DIR/artifacts/$t"
  scratch="$CARGO_TARGET_DIR/scratch/$t"
  log="$CARGO_TARGET_DIR/logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  rm -rf "$scratch" && mkdir -p "$scratch"
  marker="$CARGO_TARGET_DIR/logs/$t.start"
  touch "$marker"
  printf '\n==> %s: %ss, max_len %s\n' "$t" "$secs" "${max_len[$t]}"
  # New inputs go to the first directory (the working corpus); the seeds are read only.
  # One in-process fuzzer on one core (no -jobs/-workers: job mode forks workers that
  # write fuzz-N.log into the working directory, which is why it is the target dir too).
  # -timeout turns a hang into a failure.
  status=0
  (cd "$CARGO_TARGET_DIR" && PINFOLD_FUZZ_SCRATCH="$scratch" "$bin_dir/$t" \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len="${max_len[$t]}" -timeout=30 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$corpus" "$fuzz_dir/seeds/$t") >"$log" 2>&1 || status=$?
  # The last coverage line and the final statistics, for the record.
  grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE).*cov:' "$log" | tail -n 1 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
  echo "corpus: $(find "$corpus" -type f | wc -l) inputs"
  if [ "$status" -ne 0 ]; then
    crash="$(find "$artifacts" -type f -newer "$marker" | head -n 1)"
    echo "FAILED: $t (exit $status); log: $log"
    grep -E '^(==[0-9]+==ERROR|thread .* panicked|SUMMARY)' "$log" | head -n 5 || true
    if [ -n "$crash" ]; then
      echo "crash input: $crash"
      echo "reproduce:   $bin_dir/$t $crash"
      echo "         or: (cd fuzz && ${cargo[*]} fuzz run --fuzz-dir . -s $sanitizer $t $crash)"
    fi
    failed+=("$t")
  fi
  rm -f "$marker"
  rm -rf "$scratch"
done

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}"
  exit 1
fi
echo "fuzzing passed: ${#targets[@]} targets, ${secs}s each ($mode)"
