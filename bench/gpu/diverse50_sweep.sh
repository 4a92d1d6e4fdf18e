#!/bin/bash
# 50-run digits zoo: training settings swept in parallel on one GPU (a probe; results in
# bench/results/diverse_sweep_h100.json). ZOO = the 250 checkpoints of bench/diverse.py's digits-50.
# Wheels missing on the GPU machine (diffusers, tomli_w, importlib_metadata) travel in .whl/.
: "${ZOO:?set ZOO to the digits-50 checkpoint folder}"; OUT=${OUT:-.}
[ -d .whl ] && { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi -L; python3 -c "import torch, rpgen; print(torch.__version__, torch.cuda.is_available())" || exit 1
TRAIN_LIMIT=${TRAIN_LIMIT:-400}
job() {
  name=$1; shift
  (
    start=$(date +%s)
    timeout $TRAIN_LIMIT python3 -m rpgen.cli train "$ZOO" --out /tmp/r/$name --overwrite --no-progress \
        --set train.mixed_precision=no "$@" > /tmp/log.$name 2>&1
    echo "train rc=$? s=$(( $(date +%s) - start ))" >> /tmp/log.$name
    if [ -f /tmp/r/$name/generator.safetensors ]; then
      python3 -m rpgen.cli generate /tmp/r/$name --out /tmp/g/$name --num 20 --overwrite --no-progress >> /tmp/log.$name 2>&1 &&
      python3 -m rpgen.cli evaluate /tmp/r/$name --generated /tmp/g/$name --evaluator rpgen.zoo.digits:evaluate --no-progress >> /tmp/log.$name 2>&1
      echo "done s=$(( $(date +%s) - start ))" >> /tmp/log.$name
    fi
  ) &
}
job a6k    --set train.steps=6000
job b10k   --set train.steps=10000
job c10k1  --set train.steps=10000 --set train.lr=1e-3
job d10k6  --set train.steps=10000 --set train.lr=6e-3
job e10kd128 --set train.steps=10000 --set model.d_model=128
job f10kb16 --set train.steps=10000 --set train.batch_size=16
job g6kb32 --set train.steps=6000 --set train.batch_size=32
job h10ke  --set train.steps=10000 --set train.ema_decay=0.999
wait
python3 bench/gpu/diverse50_summary.py /tmp/r /tmp/g > $OUT/summary.json
for f in /tmp/log.*; do echo "== $f"; tail -5 $f; done > $OUT/logs.txt
cat $OUT/summary.json
