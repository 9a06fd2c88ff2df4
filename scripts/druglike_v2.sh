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
#   scripts/druglike_v2.sh cond-rows MODEL GUIDANCE DATA_DIR OUT_DIR
#                                                   # issue 41's bar for a conditional file at one guidance weight, both
#                                                   # cores (~1.5 h at guidance 1; twice that above 1): the target rows
#                                                   # (benchmarks/druglike_conditioning.py), then the model's unconditional
#                                                   # 1,000 molecules and the three-property request's, each scored by
#                                                   # benchmarks/druglike_quality.py (strain, PoseBusters, rings, MOSES)
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
  cond-rows)
    model=$2 guidance=$3 data=$4 out=$5
    mkdir -p "$out"
    rows=(python benchmarks/druglike_conditioning.py --checkpoint "$model" --guidance "$guidance" --n 1000 --restarts 6
          --restart-rings --compile --base "$out/unconditional.json")
    # one process samples the unconditional row (the naive bound) first; the other then reads it from --base;
    # each writes its own rows file (two processes merging into one file at once could lose rows)
    OMP_NUM_THREADS=1 "${rows[@]}" --properties qed,logp,mw,tpsa --json "$out/rows_a.json" > "$out/rows_a.log" 2>&1 &
    first=$!
    while [ ! -f "$out/unconditional.json" ] && kill -0 "$first" 2>/dev/null; do sleep 10; done
    OMP_NUM_THREADS=1 "${rows[@]}" --properties hbd,hba,rotb,arom --no-triple --json "$out/rows_b.json" > "$out/rows_b.log" 2>&1
    wait "$first"
    # the three-property request as a user asks for it (ranges of druglike_conditioning.py's TRIPLE), and
    # the unconditional file, scored alike
    triple=$(python -c "import json; r=[r for r in json.load(open('$out/rows_a.json'))['rows'] if r['kind'] == 'three ranges'][0]; print(' '.join('--condition ' + c for c in r['request'].split()))")
    for what in unconditional triple; do
      extra=(); [ "$what" = triple ] && extra=($triple --guidance "$guidance")
      molediff sample --checkpoint "$model" --n 1000 --noise-scale 1 --restarts 6 --restart-rings "${extra[@]}" \
        --out "$out/$what.sdf" --no-progress
      python benchmarks/druglike_quality.py --data "$out/$what.sdf" --train "$data/moses_b" --posebusters 1000 --jobs 2 \
        --label "$what: $model" --out "$out/quality_$what.json"
    done ;;
  *) sed -n 2,20p "$0"; exit 2 ;;
esac
