# Sourced: ensure_monai_venv DIR creates (once) a virtual environment in DIR that sees Debian's
# torch, numpy and scipy and holds monai 1.2.0 (the newest release that runs on Debian's
# python3-torch 1.13) and dynamic-network-architectures 0.3.1, installed without dependencies.
ensure_monai_venv() {
  local venv="$1"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import monai, dynamic_network_architectures" 2>/dev/null; then
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "monai==1.2.0" "dynamic-network-architectures==0.3.1"
  fi
}
