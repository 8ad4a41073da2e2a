#!/usr/bin/env bash
# GPU check, for a machine with CUDA (under 5 minutes on one GPU). Run from the repository
# root with a Python that has torch with CUDA, numpy, matplotlib and tqdm:
#
#     DATA=/path/to/folder/with/FashionMNIST bash benchmarks/gpu.sh [OUT_DIR]
#
# 1. the CUDA tests (tests/e2e/test_cuda.py: device placement, AMP bf16/fp16 with the grad
#    scaler, torch.compile, channels-last, resume on CUDA);
# 2. one epoch of Fashion-MNIST per option (fp32, bf16, fp16, channels-last, compile);
# 3. time to 91% on Fashion-MNIST with the CLI recipe, on CUDA, 3 seeds;
# 4. DDP smoke runs under torchrun on 1 GPU and on all GPUs, each resumed once;
# 5. the CIFAR-10 recipe (fastnet, 10 epochs) when DATA holds cifar-10-batches-py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-results}}
mkdir -p "$OUT"
DATA=${DATA:-../shared/data}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

echo "== CUDA tests"
timeout 120 $PY -m pytest -q tests/e2e/test_cuda.py 2>&1 | tee "$OUT/tests.txt"

echo "== one epoch per option (Fashion-MNIST, mynet, batch 256)"
for opt in "" "--amp bf16" "--amp fp16" "--channels-last" "--compile"; do
  echo "-- option: ${opt:-fp32}"
  timeout 120 $PY train.py --dataset fashion_mnist --data-dir "$DATA" --model mynet --batch-size 256 \
      --epochs 2 --device cuda --quiet --runs-dir "$OUT/runs" $opt 2>&1 | grep -E "Epoch|Error"
done | tee "$OUT/options.txt"

echo "== time to 91% on CUDA"
timeout 150 $PY benchmarks/time_to_accuracy.py --device cuda --data-dir "$DATA" 2>&1 | tee "$OUT/time_to_accuracy.txt"

echo "== DDP smoke: 1 GPU and all GPUs under torchrun (Fashion-MNIST, mynet, 2 epochs, then a resume)"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
for n in $(printf "1\n%s\n" "$NGPU" | sort -un); do
  echo "-- torchrun --nproc_per_node=$n"
  timeout 180 $PY -m torch.distributed.run --standalone --nproc_per_node="$n" train.py --dataset fashion_mnist \
      --data-dir "$DATA" --model mynet --batch-size 256 --epochs 2 --device cuda --quiet \
      --runs-dir "$OUT/ddp$n" 2>&1 | grep -E "Epoch|Error|Done"
  timeout 180 $PY -m torch.distributed.run --standalone --nproc_per_node="$n" train.py --resume exp1 --epochs 3 \
      --data-dir "$DATA" --device cuda --quiet --runs-dir "$OUT/ddp$n" 2>&1 | grep -E "Epoch|Error|Done|Resuming"
done | tee "$OUT/ddp.txt"

echo "== CIFAR-10 time to accuracy (only when DATA holds cifar-10-batches-py; nothing is downloaded here)"
if [ -d "$DATA/cifar-10-batches-py" ]; then
  start=$(date +%s.%N)
  timeout 300 $PY train.py --dataset cifar10 --data-dir "$DATA" --dataset-option download=false --model fastnet \
      --batch-size 512 --epochs 10 --optimizer sgd --lr 0.2 --weight-decay 5e-4 --scheduler cosine \
      --augment crop-flip --reapply-transforms --amp bf16 --channels-last --device cuda --quiet \
      --runs-dir "$OUT/cifar" 2>&1 | grep -E "Epoch|Error|Done" | tee "$OUT/cifar10.txt"
  echo "wall: $(echo "$(date +%s.%N) - $start" | bc) s" | tee -a "$OUT/cifar10.txt"
else
  echo "skipped: $DATA/cifar-10-batches-py not found" | tee "$OUT/cifar10.txt"
fi
