# `mpirun -np 2 vox train` as the README shows it: two ranks with half the global batch each follow
# the one-process run (the same loss and validation Dice per epoch, to 1e-4: batch Dice is summed
# over both ranks); rank 0 alone reports; the run resumes on 1 rank and then on 2; misuse is
# refused with status 2; a rank that fails ends the job at once, naming itself.
#   bash tests/cli/dist_train.sh MPIRUN VOX WORK_DIR
set -euo pipefail
mpirun="$1" vox="$2" work="$3"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf "$work" && mkdir -p "$work"
small=(--epochs 2 --iterations 4 --batch 2 --patch 32 --channels 8,16,32)
"$mpirun" --oversubscribe -np 2 "$vox" train --synthetic --run "$work/two" "${small[@]}" > "$work/two.txt"
cat "$work/two.txt"
grep -q "2 ranks (mpi) x 1 threads" "$work/two.txt"
[ "$(grep -c '^epoch 1:' "$work/two.txt")" -eq 1 ] || { echo "FAIL: not rank 0 alone reported"; exit 1; }
"$vox" train --data "$work/two/synthetic-data" --run "$work/one" "${small[@]}" > "$work/one.txt"
/usr/bin/python3 - "$work/two/metrics.csv" "$work/one/metrics.csv" <<'PY'
import csv, sys
two, one = (list(csv.DictReader(open(p))) for p in sys.argv[1:3])
assert len(two) == len(one) == 2, (len(two), len(one))
for a, b in zip(two, one):
    for key in ("loss", "mean_dice"):
        x, y = float(a[key]), float(b[key])
        print(f"epoch {int(a['epoch']) + 1} {key}: 2 ranks {x:.6f}, 1 process {y:.6f}")
        assert abs(x - y) <= 1e-4 * max(1.0, abs(y)), f"{key} differs: {x} against {y}"
PY
# resume: epoch 3 on one rank, epoch 4 on two
"$vox" train --data "$work/two/synthetic-data" --run "$work/two" "${small[@]}" --epochs 3 --resume > "$work/resumed1.txt"
grep -q "resuming at epoch 3" "$work/resumed1.txt"
"$mpirun" --oversubscribe -np 2 "$vox" train --data "$work/two/synthetic-data" --run "$work/two" "${small[@]}" --epochs 4 --resume \
  > "$work/resumed2.txt"
grep -q "resuming at epoch 4" "$work/resumed2.txt"
/usr/bin/python3 - "$work/two/metrics.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3], rows
print("resumed on 1 rank, then 2:", [round(float(r["loss"]), 4) for r in rows])
PY
refused() {  # refused MESSAGE COMMAND...
  local message="$1"; shift
  set +e; output="$("$@" 2>&1)"; status=$?; set -e
  [ "$status" -eq 2 ] && echo "$output" | grep -q -- "$message" || { echo "FAIL: '$*' gave status $status: $output"; exit 1; }
}
refused "must be a multiple of the 2" "$mpirun" --oversubscribe -np 2 "$vox" train --data "$work/two/synthetic-data" --run "$work/bad" "${small[@]}" --batch 3
refused "--dist takes" "$vox" train --data "$work/two/synthetic-data" --run "$work/bad" --dist gloo
refused "it needs --device cuda" "$vox" train --data "$work/two/synthetic-data" --run "$work/bad" --dist nccl
# one rank failing ends the job at once, naming the rank, instead of leaving the other waiting
set +e; output="$(timeout 60 "$mpirun" --oversubscribe -np 2 "$vox" train --data "$work/missing" --run "$work/bad" 2>&1)"; status=$?; set -e
[ "$status" -ne 0 ] && [ "$status" -ne 124 ] && echo "$output" | grep -q "vox train: rank 0 of 2: dataset: .*missing has no dataset.json" ||
  { echo "FAIL: a failing rank gave status $status: $output"; exit 1; }
echo "dist train: passed"
