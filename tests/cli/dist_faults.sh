# A rank that dies (SIGKILL) or hangs, in a job whose collectives have a 3 s deadline:
#   - hangs: the survivor's watchdog ends the job, non-zero, naming the rank that waited, the
#     collective and its sequence number, and listing its last collectives;
#   - dies: mpirun itself ends the job at once, non-zero, naming the dead rank and the signal;
#     with --enable-recovery (mpirun lets the survivor run on), the watchdog names the collective
#     as above. (OpenMPI 4.1's mpirun then exits 0 even after MPI_Abort, so only the message is
#     checked there.)
#   bash tests/cli/dist_faults.sh MPIRUN DIST_FAULT_PROGRAM
set -uo pipefail
mpirun="$1" program="$2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fail() { echo "FAIL: $*"; exit 1; }
run() {  # run LABEL MPIRUN_OPTIONS... -- PROGRAM_OPTIONS
  local label="$1"; shift
  start=$(date +%s)
  output="$(timeout 120 "$mpirun" --oversubscribe -np 2 "$@" 2>&1)"
  status=$? seconds=$(( $(date +%s) - start ))
  echo "== $label: exit status $status after $seconds s"
  echo "$output" | grep -v '^$' | head -30
  [ "$status" -ne 124 ] || fail "$label: the job was still running after 120 s"
  [ "$seconds" -lt 60 ] || fail "$label: $seconds s is far past the 3 s deadline"
}
watchdog_message() {
  echo "$output" | grep -q "rank 0 of 2 (mpi): allreduce #5 (step 5) of 1000 f32 (4000 bytes) did not finish within" ||
    fail "$1: no watchdog message naming rank 0 and allreduce #5 (step 5)"
  echo "$output" | grep -q "allreduce #4 (step 4) of 1000 f32 (4000 bytes): done in" || fail "$1: the message does not list the last collectives"
}
run hang "$program" --hang
[ "$status" -ne 0 ] || fail "hang: the job exited 0"
watchdog_message hang
run kill "$program" --kill
[ "$status" -ne 0 ] || fail "kill: the job exited 0"
echo "$output" | grep -q "rank 1 with PID .* exited on signal 9" || fail "kill: mpirun did not name the dead rank"
run "kill, --enable-recovery" --enable-recovery "$program" --kill
watchdog_message "kill, --enable-recovery"
echo "dist faults: ended within the deadline, each named"
