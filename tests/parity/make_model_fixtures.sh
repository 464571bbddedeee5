#!/usr/bin/env bash
# Model parity fixtures: MONAI's own networks (monai 1.2.0 from PyPI, the newest release that runs
# on Debian's python3-torch 1.13) and nnU-Net's (dynamic-network-architectures 0.3.1), installed
# without dependencies into a virtual environment that sees Debian's torch and numpy. Writes the
# fixtures into OUTDIR.
#   bash make_model_fixtures.sh OUTDIR
set -euo pipefail
out="$1"
mkdir -p "$out"
venv="$out/venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import monai, dynamic_network_architectures" 2>/dev/null; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "monai==1.2.0" "dynamic-network-architectures==0.3.1"
fi
"$venv/bin/python" "$(dirname "$0")/make_model_fixtures.py" "$out"
