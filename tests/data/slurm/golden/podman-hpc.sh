#!/bin/bash
#SBATCH --job-name=run42-processEimage
#SBATCH --partition=debug
#SBATCH --time=0-00:30:00
#SBATCH --mem=2000M
#SBATCH --output=/scratch/run42/%j.out
#SBATCH --acctg-freq=task=1
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
desc_usage=$(mktemp "${TMPDIR:-/tmp}/airflow-desc-usage.XXXXXX" 2>/dev/null)
case "$desc_usage" in *[:,]*) rm -f -- "$desc_usage"; desc_usage= ;; esac
export DESC_USAGE_FILE="$desc_usage"
desc_t0=$(date +%s.%N)
desc_times="${TMPDIR:-/tmp}/airflow-desc-times.$$"
times 2>/dev/null >"$desc_times" && { read -r desc_x; read -r desc_c0; } <"$desc_times"
bash -c 'desc_r=$1; shift 1
desc_n=${DESC_CONTAINER_NAME:-airflow-desc-${SLURM_JOB_ID:-0}-$$-$RANDOM}
desc_s=
desc_stop() {
  [ -z "$desc_s" ] || return 0; desc_s=1
  "$desc_r" stop -i -t 2 "$desc_n" >/dev/null 2>&1
  "$desc_r" rm -f -i -t 0 "$desc_n" >/dev/null 2>&1
}
trap '"'"'desc_stop'"'"' TERM
trap '"'"'desc_stop'"'"' INT
trap '"'"'desc_stop'"'"' HUP
trap '"'"'"$desc_r" kill -s USR1 "$desc_n" >/dev/null 2>&1'"'"' USR1
trap '"'"'"$desc_r" kill -s USR2 "$desc_n" >/dev/null 2>&1'"'"' USR2
"$desc_r" run --name "$desc_n" "$@" 0<&0 &
desc_c=$!
while :; do wait "$desc_c"; desc_rc=$?; kill -0 "$desc_c" 2>/dev/null || break; done
[ "$desc_rc" -gt 128 ] && desc_stop
exit "$desc_rc"' airflow-desc-container podman-hpc --rm --gpu --volume /global/cfs/desc:/desc --env DESC_RUN --env DESC_USAGE_FILE ${DESC_USAGE_FILE:+--volume "$DESC_USAGE_FILE:$DESC_USAGE_FILE"} --volume "$PWD:$PWD" --workdir "$PWD" lsstdesc/desc-stack:w_2025_01 bash -c 'set -m
(
processEimage.py --visit 159479 --sensor '"'"'R22 S11'"'"'
) 0<&0 &
desc_p=$!
set +m
trap '"'"'kill -s TERM -- -"$desc_p" 2>/dev/null'"'"' TERM
trap '"'"'kill -s INT -- -"$desc_p" 2>/dev/null'"'"' INT
trap '"'"'kill -s HUP -- -"$desc_p" 2>/dev/null'"'"' HUP
trap '"'"'kill -s USR1 -- -"$desc_p" 2>/dev/null'"'"' USR1
trap '"'"'kill -s USR2 -- -"$desc_p" 2>/dev/null'"'"' USR2
while :; do wait "$desc_p"; desc_rc=$?; kill -0 "$desc_p" 2>/dev/null || break; done
if [ -n "$DESC_USAGE_FILE" ]; then
  times >"$DESC_USAGE_FILE" 2>/dev/null
  desc_own=; desc_v1=; desc_u=
  while IFS=: read -r _ c p; do case ,$c, in
    *,memory,*) desc_v1=1; [[ ${p##*/} =~ [0-9a-f]{64} ]] && desc_own=1 ;;
    ,,) desc_u=$p ;;
  esac; done </proc/self/cgroup
  if [ -z "$desc_v1" ]; then case "$desc_u" in
    /) desc_own=1 ;;
    *) [[ ${desc_u##*/} =~ [0-9a-f]{64} ]] && desc_own=1 ;;
  esac; fi
  { { [ -n "$desc_own" ] && { cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.peak 2>/dev/null; }; } || echo; } >>"$DESC_USAGE_FILE" 2>/dev/null
  desc_k=; [ -n "$desc_own" ] && for f in /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events; do [ -r "$f" ] || continue
    while read -r k v; do [ "$k" = oom_kill ] && desc_k=$v; done <"$f"; break; done
  echo "$desc_k" >>"$DESC_USAGE_FILE" 2>/dev/null
fi
exit "$desc_rc"' &
payload_pid=$!
trap 'interrupted=1; kill -s TERM "$payload_pid" 2>/dev/null' TERM
trap 'interrupted=1; kill -s INT "$payload_pid" 2>/dev/null' INT
trap 'interrupted=1; kill -s HUP "$payload_pid" 2>/dev/null' HUP
# wait returns early when a trapped signal arrives: wait again until the payload ends.
interrupted=1
while [ "$interrupted" = 1 ]; do interrupted=0; wait "$payload_pid"; rc=$?; done
times 2>/dev/null >"$desc_times" && { read -r desc_x; read -r desc_c1; } <"$desc_times"
rm -f -- "$desc_times"
desc_t1=$(date +%s.%N)
desc_kc=; desc_km=; desc_ko=
if [ -s "$desc_usage" ]; then
  { read -r desc_x; read -r desc_kc; read -r desc_km; read -r desc_ko; } <"$desc_usage"
fi
if [ -n "$desc_usage" ]; then rm -f -- "$desc_usage"; fi
echo "airflow-desc: job ${SLURM_JOB_ID:-unknown} payload exit code $rc at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "airflow-desc: job ${SLURM_JOB_ID:-unknown} payload timing: wall $desc_t0 $desc_t1 cpu $desc_c0 -> $desc_c1 container ${desc_kc:-unmeasured} maxrss ${desc_km:-unmeasured} oomkill ${desc_ko:-unmeasured}"
exit "$rc"
