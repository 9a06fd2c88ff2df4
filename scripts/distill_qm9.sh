#!/usr/bin/env bash
# Few-step students of the bundled qm9-joint by progressive distillation (issue 38): each stage halves
# the steps of the one before (75 -> 38 -> 19 -> 10 -> 5), its student the next stage's teacher.
#
#   scripts/distill_qm9.sh stage RUNS N [TEACHER]   # distil TEACHER (default: the previous stage's student,
#                                                   #   or the bundled qm9-joint for the first) into RUNS/student_N
#   scripts/distill_qm9.sh resume RUNS N            # continue a stopped stage (same machine)
#   scripts/distill_qm9.sh gpu RUNS N [TEACHER]     # a lent GPU: larger batches, stops by itself after MINUTES (9)
#
# One thread, --compile, checkpoints every 5 minutes; stop a CPU stage with `kill -TERM PID` (it saves).
# Score a student: python benchmarks/qm9_quality.py --checkpoint RUNS/student_N/ema_model.pt --steps N --eta 0
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=(--data qm9 --lr 1e-4 --batch-size 64 --eval-every-steps 1000 --eval-samples 64 --checkpoint-minutes 5)
previous() {  # the student of the stage before N (the next even split upwards), or the bundled teacher
  local up=$(( $1 * 2 ))
  for cand in "$up" "$(( up - 1 ))" "$(( up + 1 ))"; do
    [ -f "$2/student_$cand/ema_model.pt" ] && { echo "$2/student_$cand/ema_model.pt"; return; }
  done
  echo molediff/pretrained/qm9_joint_ema.pt
}
case "${1:-}" in
  stage)
    teacher="${4:-$(previous "$3" "$2")}"
    OMP_NUM_THREADS=1 exec molediff train --distill-from "$teacher" --distill-steps "$3" --out "$2/student_$3" \
      "${RECIPE[@]}" --threads 1 --compile --no-progress ;;
  resume)
    OMP_NUM_THREADS=1 exec molediff train --out "$2/student_$3" --resume --threads 1 --compile --no-progress ;;
  gpu)
    if [ -f "$2/student_$3/checkpoint.pt" ]; then
      exec molediff train --out "$2/student_$3" --resume --device cuda --batch-size 256 --max-minutes "${MINUTES:-9}" --no-progress
    fi
    teacher="${4:-$(previous "$3" "$2")}"
    exec molediff train --distill-from "$teacher" --distill-steps "$3" --out "$2/student_$3" "${RECIPE[@]}" \
      --batch-size 256 --device cuda --max-minutes "${MINUTES:-9}" --no-progress ;;
  *) sed -n 2,12p "$0"; exit 2 ;;
esac
