# Sourced by the peers scripts: the PyPI virtual environment, one measurement, and the table's
# place in docs/perf.md.

# ensure_peer_venv DIR: torch, onnx, onnxscript, onnxruntime, openvino from PyPI, and monai
# without its dependencies, in a virtual environment at DIR (made on first use; torch pulls
# about 5 GB).
ensure_peer_venv() {
  local venv="$1"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, monai, onnx, onnxruntime, openvino" 2> /dev/null; then
    echo "== creating $venv: torch, onnx, onnxscript, onnxruntime, openvino from PyPI; monai without its dependencies"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch onnx onnxscript onnxruntime openvino numpy
    "$venv/bin/pip" install -q --no-deps monai
  fi
}

# ensure_nncf DIR: NNCF (OpenVINO's post-training quantization) in the peers' environment.
ensure_nncf() {
  local venv="$1"
  "$venv/bin/python" -c "import nncf" 2> /dev/null || { echo "== installing nncf from PyPI into $venv"; "$venv/bin/pip" install -q nncf; }
}

# measure LABEL COMMAND...: runs the command, shows its summary on stderr, and prints its
# ms_per_iter and peak_rss_mib.
measure() {
  local label="$1" log
  shift
  log="$(mktemp)"
  echo "== $label: $*" >&2
  "$@" > "$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; echo "$label failed" >&2; exit 1; }
  grep -v "^iteration" "$log" | grep -v "Warning\|warn\|check_training_mode" >&2 || true
  echo "$(sed -n 's/^ms_per_iter=//p' "$log") $(sed -n 's/^peak_rss_mib=//p' "$log")"
  rm -f "$log"
}

# write_perf_table KEY HEADING TABLE: puts TABLE between the "KEY" markers of docs/perf.md, or
# at its end under HEADING where the markers are not there yet.
write_perf_table() {
  python3 - docs/perf.md "$1" "$2" "$3" <<'PY'
import sys
path, key, heading, table = sys.argv[1:5]
text = open(path).read()
begin, end = f"<!-- {key} -->", f"<!-- /{key} -->"
block = f"{begin}\n{table}\n{end}"
if begin in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
else:
    text += f"\n## {heading}\n\n{block}\n"
open(path, "w").write(text)
PY
  echo "wrote the table to docs/perf.md"
}
