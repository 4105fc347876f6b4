#!/usr/bin/env bash
# The rest of `make reference` (commit f19bb40, frozen checkout) once training is done:
# the grids, then the speed measurements with the niced study runs paused (SIGSTOP) so that
# they measure an otherwise idle machine.
cd /work/refcode
export CVAE_DATA_DIR=/work/data CVAE_CHECKPOINT_DIR=/work/ck
REF=/work/refrun
PY=/work/main/.venv/bin/python
while pgrep -f resume.sh > /dev/null; do sleep 30; done
$PY -m cvae_helpers figures --profile full --seed 0 --output $REF/p_y_given_z
$PY -m cvae_helpers figures --profile full --seed 0 --decoder-sees-input --output $REF/p_y_given_xz
pkill -STOP -f "cvae_helpers study run"
pkill -STOP -f "pytest"
$PY -m cvae_helpers bench --batches 100 --precision fp32 > $REF/bench.json
$PY -m cvae_helpers step-times --steps 50 > $REF/step_times.json
pkill -CONT -f "pytest"
pkill -CONT -f "cvae_helpers study run"
date -u +%FT%TZ > $REF/logs/finished.txt
