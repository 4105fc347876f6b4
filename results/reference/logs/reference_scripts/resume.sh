#!/usr/bin/env bash
# Resume the training part of `make reference` (commit f19bb40) from its per-epoch checkpoints,
# skipping settings whose metrics are already written. Same commands as train.sh.
cd /work/refcode
export CVAE_DATA_DIR=/work/data CVAE_CHECKPOINT_DIR=/work/ck
REF=/work/refrun
PY=/work/main/.venv/bin/python
TRAIN="$PY -m cvae_helpers train --profile full --seed 0 --precision fp32 --no-progress --force-training"
date -u +%FT%TZ >> $REF/logs/restarted.txt
pids=""
for q in 1 2 3; do
  cmds=""
  [ -f $REF/p_y_given_z/metrics_q$q.json ] || cmds="$TRAIN --quadrants $q --output $REF/p_y_given_z"
  [ -f $REF/p_y_given_xz/metrics_q$q.json ] || cmds="${cmds:+$cmds && }$TRAIN --quadrants $q --decoder-sees-input --output $REF/p_y_given_xz"
  [ -n "$cmds" ] || continue
  OMP_NUM_THREADS=1 /usr/bin/time -v -a -o $REF/logs/time_q$q.txt sh -c "$cmds" >> $REF/logs/train_q$q.log 2>&1 &
  pids="$pids $!"
done
for pid in $pids; do wait $pid || echo "a training process failed: $pid"; done
date -u +%FT%TZ > $REF/logs/trained.txt
