#!/usr/bin/env bash
# Schema check of what `kubeharden fix` writes: every workload document that passes
# `kubernetes-validate --strict` before `kubeharden fix --unsafe-fixes` must pass after it.
# Usage: tests/schema/validate-fixed.sh KUBEHARDEN_BINARY FILE...
set -euo pipefail
bin=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/before" "$tmp/after"
i=0
for f in "$@"; do
  i=$((i + 1))
  cp "$f" "$tmp/before/$i.yaml"
  cp "$f" "$tmp/after/$i.yaml"
done
errors() {
  # One line per failing resource, without the folder that differs between the two runs.
  (cd "$1" && kubernetes-validate --strict --quiet --no-warn ./*.yaml 2>&1 || true) | grep '^ERROR' | sort || true
}
errors "$tmp/before" > "$tmp/before.txt"
# Exit 1 only says findings remain (those without a fix).
"$bin" fix --unsafe-fixes --write "$tmp/after" > /dev/null 2> "$tmp/fix.log" || [ $? -eq 1 ] || { cat "$tmp/fix.log"; exit 1; }
errors "$tmp/after" > "$tmp/after.txt"
new=$(comm -13 "$tmp/before.txt" "$tmp/after.txt")
if [ -n "$new" ]; then
  echo "kubernetes-validate --strict: documents that passed before fixing fail after it:"
  echo "$new"
  exit 1
fi
changed=$(cd "$tmp" && diff -rq before after | wc -l || true)
echo "schema check: $# files, $changed changed by fix; invalid resources: $(wc -l < "$tmp/before.txt") before, $(wc -l < "$tmp/after.txt") after, none newly invalid"
