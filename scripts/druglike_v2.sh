#!/usr/bin/env bash
# druglike v2 training: aromatic bond type and valence feedback, continued from the bundled model (issue 37).
#
#   scripts/druglike_v2.sh data DATA_DIR            # build MOSES-3D (60,000 molecules; ~20 min on 2 cores)
#   scripts/druglike_v2.sh start DATA_DIR RUN_DIR   # new run from the bundled weights (--init-from), 1 thread
#   scripts/druglike_v2.sh deepen DATA_DIR RUN_DIR NEW_RUN_DIR [LAYERS]  # continue RUN_DIR's model with
#                                                   # layers appended (default 6; they start as the identity)
#   scripts/druglike_v2.sh resume RUN_DIR           # continue a stopped run (same machine)
#   scripts/druglike_v2.sh gpu DATA_DIR RUN_DIR     # a lent GPU: resume RUN_DIR if it exists, else start; stops by itself
#   scripts/druglike_v2.sh cond DATA_DIR RUN_DIR    # issue 41: the bundled model fine-tuned on eight drug-like property
#                                                   # targets (classifier-free guidance); resume it with `resume RUN_DIR`
#
# DATA_DIR/moses_b holds the training chunks (chunk 20 is held out for the benchmark's data row).
# Stop a CPU run with `kill -TERM PID` (it saves a checkpoint); SIGINT is ignored in background jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=(--diffusion-bond-orders 0,1,2,3,4 --diffusion-valence-feedback --lr 5e-4 --batch-size 64 --eval-every-steps 1500 --eval-samples 64
        --eval-sample-steps 50 --checkpoint-minutes 5)
case "${1:-}" in
  data)
    molediff data --out "$2/moses_train" --limit 60000 --no-progress
    mkdir -p "$2/moses_b"
    for f in "$2"/moses_train/chunk_*.sdf; do
      [ "$(basename "$f")" = chunk_000020.sdf ] || ln -sf "$f" "$2/moses_b/"
    done ;;
  start)
    OMP_NUM_THREADS=1 exec molediff train --init-from molediff/pretrained/druglike_ema.pt --data "$2/moses_b" --out "$3" \
      "${RECIPE[@]}" --threads 1 --compile --no-progress ;;
  deepen)
    # the v2 run went from 4 to 6 layers at step 68,901 (benchmarks/README.md): lower validation loss at equal CPU time
    OMP_NUM_THREADS=1 exec molediff train --init-from "$3/ema_model.pt" --model-layers "${5:-6}" --data "$2/moses_b" --out "$4" \
      "${RECIPE[@]}" --threads 1 --compile --no-progress ;;
  resume)
    OMP_NUM_THREADS=1 exec molediff train --out "$2" --resume --threads 1 --compile --no-progress ;;
  gpu)
    if [ -f "$3/checkpoint.pt" ]; then
      exec molediff train --out "$3" --resume --device cuda --batch-size 256 --max-minutes "${MINUTES:-9}" --no-progress
    fi
    exec molediff train --init-from molediff/pretrained/druglike_ema.pt --data "$2/moses_b" --out "$3" "${RECIPE[@]}" \
      --batch-size 256 --device cuda --max-minutes "${MINUTES:-9}" --no-progress ;;
  cond)
    OMP_NUM_THREADS=1 exec molediff train --config molediff/pretrained/druglike_config.json --init-from molediff/pretrained/druglike_ema.pt \
      --diffusion-conditions qed,logp,mw,tpsa,hbd,hba,rotb,arom --data "$2/moses_b" --out "$3" --lr 1.5e-4 --threads 1 --compile \
      --no-progress ;;
  *) sed -n 2,14p "$0"; exit 2 ;;
esac
