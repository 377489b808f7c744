#!/usr/bin/env bash
# Vendors uPlot (MIT) into the console: scripts/vendor-uplot.sh [VERSION], default the newest.
# It fetches the npm package with `npm pack`, copies the ES module, its stylesheet and its
# licence, and rewrites VENDORED.txt. The console loads only these copies at run time.
set -euo pipefail
version="${1:-latest}"
dest="$(cd "$(dirname "$0")/.." && pwd)/platform/controlplane/console/static/vendor/uplot"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@${version}" >/dev/null && tar xzf uplot-*.tgz)
got="$(node -p "require('$work/package/package.json').version")"
mkdir -p "$dest"
cp "$work/package/dist/uPlot.esm.js" "$dest/uPlot.esm.js"
cp "$work/package/dist/uPlot.min.css" "$dest/uPlot.min.css"
cp "$work/package/LICENSE" "$dest/LICENSE.txt"
cat > "$dest/VENDORED.txt" <<NOTE
uPlot ${got} (MIT licence, LICENSE.txt beside this note), https://github.com/leeoniya/uPlot
Files: dist/uPlot.esm.js and dist/uPlot.min.css of the npm package uplot@${got}, unchanged.
Update: scripts/vendor-uplot.sh [VERSION] (npm pack uplot), then run
tests/unit/test_console_files.py and tests/e2e/test_console_browser.py.
NOTE
echo "uPlot ${got} vendored into ${dest}"
