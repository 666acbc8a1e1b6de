#!/usr/bin/env bash
# mypy --strict over the installed package layout.
# setuptools maps drivers/ and simulators/ to vitalwatch.drivers / vitalwatch.simulators; mypy
# does not follow the editable import hook, so we give it a tree of links in that layout.
set -euo pipefail
bin=${1:-.venv/bin}
top=$(cd "$(dirname "$0")/.." && pwd)
tree="$top/build/typecheck"
rm -rf "$tree"
mkdir -p "$tree/vitalwatch"
for entry in "$top"/vitalwatch/*; do
    ln -s "$entry" "$tree/vitalwatch/$(basename "$entry")"
done
ln -s "$top/drivers" "$tree/vitalwatch/drivers"
ln -s "$top/simulators" "$tree/vitalwatch/simulators"
cd "$tree"
"$top/$bin/mypy" --config-file "$top/pyproject.toml" -p vitalwatch
