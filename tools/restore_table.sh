#!/usr/bin/env bash
# The end-to-end table of BENCHMARKS.md: `diffinv restore` on the held-out photos for every
# task × method × step count, one JSON line per run (stdout), on the given backend.
#   tools/restore_table.sh cpu > restore_cpu.jsonl
#   METHODS=dps tools/restore_table.sh cpu      # some methods only
set -euo pipefail
backend="${1:-cpu}"
bin="${DIFFINV_BIN:-target/release/diffinv}"
methods="${METHODS:-cpigdm pigdm dps dds}"
for image in assets/images/*.png; do
  for task in sr4 inpaint-box inpaint-random colorize deblur; do
    for method in $methods; do
      for steps in 5 10 20; do
        "$bin" restore --image "$image" --task "$task" --method "$method" --steps "$steps" \
          --backend "$backend" --out "${TMPDIR:-/tmp}/restore-table" --json 2>/dev/null
      done
    done
  done
done
