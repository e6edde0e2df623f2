#!/usr/bin/env bash
# Train a world model for one task with the project recipe and measure goal-image planning.
#
#   bash scripts/reproduce_task.sh ENV [EPISODES] [EXTRA_PLAN_OVERRIDES...]
#   bash scripts/reproduce_task.sh reacher 600
#
# Stages (each resumes or reuses its output when rerun): collect -> pretrain_encoder ->
# train_predictor -> plan (50 episodes). Outputs: data/<ENV>, runs/<ENV>_{enc,pred,plan50}.
# Knobs via environment variables: ENC_STEPS (1200; 0 = the frozen random-init encoder), PRED_STEPS (3000), LATENT_NORM (dim),
# PLAN_EPISODES (50), THREADS (1; one thread per process is fastest on a shared CPU).
set -euo pipefail
if [[ $# -eq 0 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    ls configs/env 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' ' | sed 's/^/ENV is one of: /'; echo
    exit $(( $# == 0 ? 2 : 0 ))
fi
ENV=${1:?usage: reproduce_task.sh ENV [EPISODES] [plan overrides...]}
EPISODES=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))
export OMP_NUM_THREADS=${THREADS:-1}
DATA=data/${ENV}
RUN=runs/${ENV}
set -x
python scripts/collect.py env="${ENV}" episodes="${EPISODES}" out_dir="${DATA}"
python scripts/pretrain_encoder.py data_dir="${DATA}" out_dir="${RUN}_enc" \
    encoder.embed_dim=64 encoder.num_heads=4 encoder.abs_pos_embed=true num_frames=2 \
    steps="${ENC_STEPS:-1200}" batch_size=32 jepa_predictor.dim=48 warmup_steps=60
python scripts/train_predictor.py data_dir="${DATA}" encoder_path="${RUN}_enc/encoder.pt" out_dir="${RUN}_pred" \
    predictor=ac_compact pool_k=2 frameskip=5 context=1 steps="${PRED_STEPS:-3000}" batch_size=64 \
    threads="${OMP_NUM_THREADS}" proprio_weight=0.1 latent_norm="${LATENT_NORM:-dim}"
python scripts/plan.py task="${ENV}" world_model="${RUN}_pred/world_model.pt" episodes="${PLAN_EPISODES:-50}" \
    threads="${OMP_NUM_THREADS}" out_dir="${RUN}_plan50" "$@"
