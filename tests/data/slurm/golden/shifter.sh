#!/bin/bash
#SBATCH --job-name=run42-processEimage
#SBATCH --partition=debug
#SBATCH --time=0-00:30:00
#SBATCH --mem=2000M
#SBATCH --output=/scratch/run42/%j.out
#SBATCH --acctg-freq=task=1
#SBATCH --image=docker:lsstdesc/desc-stack:w_2025_01
# Written by airflow_desc.slurm.render_job_script.
# No 'set -u': site setup scripts (module, conda, EUPS) read unset variables.
set -eo pipefail
trap 'echo "airflow-desc: job ${SLURM_JOB_ID:-unknown} setup failed with exit code $? at line $LINENO"' ERR
export DESC_RUN=run42
cd -- /scratch/run42
trap - ERR
echo "airflow-desc: job ${SLURM_JOB_ID:-unknown} payload starting on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "airflow-desc: job ${SLURM_JOB_ID:-unknown} payload runs in container image" lsstdesc/desc-stack:w_2025_01
# The payload runs with bash's default options, as it would on its own.
set +e +o pipefail
desc_t0=$(date +%s.%N)
desc_times="${TMPDIR:-/tmp}/airflow-desc-times.$$"
times 2>/dev/null >"$desc_times" && { read -r desc_x; read -r desc_c0; } <"$desc_times"
shifter --image=docker:lsstdesc/desc-stack:w_2025_01 --volume=/global/cfs/desc:/desc bash -c 'processEimage.py --visit 159479 --sensor '"'"'R22 S11'"'"''
rc=$?
times 2>/dev/null >"$desc_times" && { read -r desc_x; read -r desc_c1; } <"$desc_times"
rm -f -- "$desc_times"
desc_t1=$(date +%s.%N)
echo "airflow-desc: job ${SLURM_JOB_ID:-unknown} payload exit code $rc at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "airflow-desc: job ${SLURM_JOB_ID:-unknown} payload timing: wall $desc_t0 $desc_t1 cpu $desc_c0 -> $desc_c1"
exit "$rc"
