#!/usr/bin/env bash
# The end-to-end tables of BENCHMARKS.md: `diffinv restore` on the held-out photos for every
# task × method × step count, one JSON line per run (stdout), on the given backend.
#   tools/restore_table.sh cpu > restore_cpu.jsonl
#   METHODS=dps tools/restore_table.sh cpu               # some methods only
#   NOISE=0.05 STEPS=5 tools/restore_table.sh cpu        # noisy measurements, 5 steps only
#   SAMPLES=4 STEPS=5 tools/restore_table.sh cpu         # the mean of 4 posterior samples
# A run the library refuses (noisy ΠGDM / C-ΠGDM on deblurring's separable operator) prints
# {"image", "task", "method", "steps", "refused": <the one-line error>} instead.
set -euo pipefail
backend="${1:-cpu}"
bin="${DIFFINV_BIN:-target/release/diffinv}"
methods="${METHODS:-cpigdm pigdm dps dds}"
steps_list="${STEPS:-5 10 20}"
noise="${NOISE:-0}"
samples="${SAMPLES:-1}"
err="$(mktemp)"
trap 'rm -f "$err"' EXIT
for image in assets/images/*.png; do
  for task in sr4 inpaint-box inpaint-random colorize deblur; do
    for method in $methods; do
      for steps in $steps_list; do
        if ! "$bin" restore --image "$image" --task "$task" --method "$method" --steps "$steps" \
          --noise "$noise" --samples "$samples" --backend "$backend" --out "${TMPDIR:-/tmp}/restore-table" --json 2>"$err"; then
          python3 -c 'import json, sys; print(json.dumps({"image": sys.argv[1], "task": sys.argv[2],
            "method": sys.argv[3], "steps": int(sys.argv[4]), "refused": open(sys.argv[5]).read().strip()}))' \
            "$image" "$task" "$method" "$steps" "$err"
        fi
      done
    done
  done
done
