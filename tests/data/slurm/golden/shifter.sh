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
# The payload runs with bash's default options, as it would on its own.
set +e +o pipefail
shifter --image=docker:lsstdesc/desc-stack:w_2025_01 --volume=/global/cfs/desc:/desc bash -c 'processEimage.py --visit 159479 --sensor '"'"'R22 S11'"'"''
rc=$?
echo "airflow-desc: job ${SLURM_JOB_ID:-unknown} payload exit code $rc at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
exit "$rc"
