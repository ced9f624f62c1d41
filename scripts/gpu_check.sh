#!/usr/bin/env bash
# GPU check: time every registered model on CUDA (fp32, AMP bf16, channels_last; DataParallel
# and DDP over NCCL when there are several GPUs) and run the gpu/multigpu-marked tests.
# Results go to $OUT (default ./gpu-results): gpu_timings.json (time_model records, peaks,
# skips), gpu_pytest.xml (JUnit), gpu_benchmarks.json (pytest-benchmark), *.log.
# Meant to take 3-5 minutes on one H200 (each half is cut at 4); exits 2 at once, saying
# why, when torch sees no CUDA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-./gpu-results}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"

if ! "$PYTHON" - <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    print(f"gpu_check: no CUDA GPU visible to torch {torch.__version__} (CUDA build "
          f"{torch.version.cuda}); run this on a CUDA machine", file=sys.stderr)
    sys.exit(2)
names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs: {', '.join(names)}")
PY
then
  exit 2
fi

status=0
echo "== time_model on CUDA (all models x modes x variants)"
PYTHONUNBUFFERED=1 timeout 240 "$PYTHON" scripts/gpu_timings.py --out "$OUT/gpu_timings.json" \
  2>&1 | tee "$OUT/gpu_timings.log" || status=1

echo "== pytest -m 'gpu or multigpu' (benchmark tests included, through the same core)"
PYTHONUNBUFFERED=1 timeout 240 "$PYTHON" -m pytest -m "gpu or multigpu" -rs -q \
  --junitxml "$OUT/gpu_pytest.xml" --benchmark-json "$OUT/gpu_benchmarks.json" \
  2>&1 | tee "$OUT/gpu_pytest.log" || status=1

echo "gpu_check: results in $OUT (status $status)"
exit $status
