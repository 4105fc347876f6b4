#!/usr/bin/env bash
# The training part of `make reference` (commit f19bb40), run from a frozen checkout of that
# commit (/work/refcode) so that edits to the working tree cannot reach the running processes.
cd /work/refcode
export CVAE_DATA_DIR=/work/data CVAE_CHECKPOINT_DIR=/work/ck
REF=/work/refrun
PY=/work/main/.venv/bin/python
TRAIN="$PY -m cvae_helpers train --profile full --seed 0 --precision fp32 --no-progress --force-training"
pids=""
for q in 1 2 3; do
  OMP_NUM_THREADS=1 /usr/bin/time -v -o $REF/logs/time_q$q.txt sh -c \
    "$TRAIN --quadrants $q --output $REF/p_y_given_z && \
     $TRAIN --quadrants $q --decoder-sees-input --output $REF/p_y_given_xz" \
    > $REF/logs/train_q$q.log 2>&1 &
  pids="$pids $!"
done
for pid in $pids; do wait $pid || echo "a training process failed: $pid"; done
date -u +%FT%TZ > $REF/logs/trained.txt
