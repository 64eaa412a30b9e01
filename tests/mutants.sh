#!/bin/sh
# make mutants (docs/testing.md): cargo-mutants over each file given, against the unit tests
# of that module's stage, then a table of the outcomes and every surviving mutant.
#
# Each mutant runs the library's tests that match the file's filters below (libtest filters,
# any of which selects a test), never the complexity guards (`linear`: each takes seconds,
# and a mutant that only slows a parser is not what they catch). The oracle's test reads
# ORACLE_DIR, since a mutant builds in a copy of the tree without target/. Every file's run
# shares one build directory, so only the mutated crate is compiled again.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/mutants"

filters() {
  case "$1" in
    src/sources/prometheus/*) echo "sources::prometheus fuzzing::exposition" ;;
    src/sources/plugins/*) echo "sources::plugins agent" ;;
    src/buffer/*) echo "buffer fuzzing::buffer" ;;
    src/sinks/*) echo "sinks agent" ;;
    src/splay.rs) echo "splay scheduler" ;;
    src/schedule.rs) echo "schedule config" ;;
    src/monitoring/*) echo "monitoring" ;;
    *) echo "" ;;  # every test of the library
  esac
}

# Where a file's results go: target/mutants/src_splay.rs/mutants.out.
dir() { echo "$out/$(echo "$1" | tr / _)"; }

for f in "$@"; do
  mkdir -p "$(dir "$f")"
  # shellcheck disable=SC2046 # the filters are words
  CARGO_TARGET_DIR="$out/build" ORACLE_DIR="$root/target/oracle" PROPTEST_CASES=64 \
    cargo mutants --output "$(dir "$f")" -f "$f" -- --lib -- $(filters "$f") --skip linear
done

echo
echo "| file | mutants | caught | missed | timeouts | unviable | killed of viable |"
echo "|---|---|---|---|---|---|---|"
for f in "$@"; do
  d="$(dir "$f")/mutants.out"
  [ -d "$d" ] || continue
  c=$(wc -l < "$d/caught.txt"); m=$(wc -l < "$d/missed.txt")
  t=$(wc -l < "$d/timeout.txt"); u=$(wc -l < "$d/unviable.txt")
  viable=$((c + m + t))
  echo "| \`$f\` | $((viable + u)) | $c | $m | $t | $u | $(awk "BEGIN { printf \"%.0f%%\", $viable ? 100 * $c / $viable : 100 }") |"
done
for f in "$@"; do
  d="$(dir "$f")/mutants.out"
  [ -s "$d/missed.txt" ] && { echo; echo "missed in $f:"; cat "$d/missed.txt"; }
  [ -s "$d/timeout.txt" ] && { echo; echo "timed out in $f:"; cat "$d/timeout.txt"; }
done
exit 0
