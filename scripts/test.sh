#!/usr/bin/env bash
# `npm test`: every test, on a fresh clone too. Installs the Debian packages the tests use
# (as root) and the npm dependencies when node_modules is missing or stale, then runs vitest,
# whose global setup (test/support/global-setup.ts) first runs the build (`npm run build`, well
# under a second), so the programs the tests run are never a stale packages/*/dist.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-packages.sh

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "Installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$results" "$@" || status=$?
if [ -s "$results" ]; then
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const skipped = r.numPendingTests + r.numTodoTests;
    console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
  ' "$results"
fi
exit $status
