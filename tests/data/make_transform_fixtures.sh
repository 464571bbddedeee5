#!/usr/bin/env bash
# Transform fixtures: MONAI's crop/pad/resize transforms and sliding-window grid, scipy's
# gaussian_filter and numpy's percentiles, applied at test time to a small random volume.
#   bash make_transform_fixtures.sh OUTDIR
set -euo pipefail
out="$1"
mkdir -p "$out"
source "$(dirname "$0")/../parity/monai_venv.sh"
ensure_monai_venv "$out/venv"
"$out/venv/bin/python" "$(dirname "$0")/make_transform_fixtures.py" "$out"
