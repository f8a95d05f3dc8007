#!/usr/bin/env bash
# Re-record the real SLURM outputs kept in this directory, from the local site (docker/site/up).
# Usage: source $DESC_SITE_DIR/env.sh; tests/data/site/record.sh [s3df|perlmutter]
# The over-memory file is named after the site's process tracking (cgroup or linuxproc):
#   DESC_SITE_PROCTRACK=linuxproc docker/site/up   records the fallback's behaviour.
set -euo pipefail
cd "$(dirname "$0")"
cluster=${1:-s3df}
case $cluster in perlmutter) port=$DESC_SITE_SSH_PORT_PERLMUTTER ;; s3df) port=$DESC_SITE_SSH_PORT_S3DF ;; esac
ssh_() {
    ssh -p "$port" -i "$DESC_SITE_SSH_KEY" -o UserKnownHostsFile="$DESC_SITE_KNOWN_HOSTS" \
        -o StrictHostKeyChecking=yes -o BatchMode=yes "$DESC_SITE_USER@127.0.0.1" "$@"
}
FIELDS=JobID,JobName,State,ExitCode,Elapsed,TotalCPU,CPUTime,MaxRSS,ReqMem,ReqCPUS,AllocCPUS,NodeList,Submit,Start,End,Timelimit,Partition,Cluster,DerivedExitCode
# The hog holds its memory for 3 s: without cgroups, the 1 s sampler must see it to kill it.
hog='python3 -c "import time; b=bytearray(400*1024*1024); [b.__setitem__(i,1) for i in range(0,len(b),4096)]; time.sleep(3)"'
burn='python3 -c "import time; b=bytearray(200*1024*1024); [b.__setitem__(i,1) for i in range(0,len(b),4096)]; t=time.process_time()
while time.process_time()-t<2: pass"'
ok=$(ssh_ sbatch --parsable --mem=400M -t 5 -o /dev/null --wrap "'$burn'")
oom=$(ssh_ sbatch --parsable --mem=100M -t 2 -o /dev/null --wrap "'$hog'")
bad=$(ssh_ sbatch --parsable -t 1 -o /dev/null --wrap "'exit 3'")
held=$(ssh_ sbatch --parsable --hold -J held-job -t 1 -o /dev/null --wrap true)
ssh_ "squeue -h -o '%i|%j|%T|%r|%M|%l|%N' -j $held" >squeue-held.txt
sleep 2  # slurmdbd records a new job within ~1 s; before that sacct shows nothing
ssh_ "sacct -P -n --noconvert -o $FIELDS -j $held" >sacct-pending.txt
ssh_ scancel "$held"
sleep 15
ssh_ "sacct -P --noconvert -o JobID,State,ExitCode,Elapsed,TotalCPU,MaxRSS,ReqMem,NodeList,Cluster -j $oom" \
    >"sacct-over-memory-${DESC_SITE_PROCTRACK}.txt"
ssh_ "sacct -P -n --noconvert -o $FIELDS -j $ok,$oom,$bad,$held" >"sacct-mixed-${DESC_SITE_PROCTRACK}.txt"
ssh_ sbatch --parsable -M "$cluster" -t 1 -o /dev/null --wrap true >sbatch-parsable-cluster.txt || true
if [ "$cluster" = perlmutter ]; then
    # What the controller says (scontrol -o show job) of ended and live jobs: a completed job, one
    # that exited 3 (named with a space), a running one and a held one. The tests expect ids
    # 3268-3271 (recorded in that order); re-recording needs the tests' ids updated.
    done_=$(ssh_ sbatch --parsable -J purgeprobe -t 1 -o /dev/null --wrap "'sleep 2'")
    fail=$(ssh_ sbatch --parsable -J "'probe fail'" -t 1 -o /dev/null --wrap "'exit 3'")
    run=$(ssh_ sbatch --parsable -J proberun -t 2 -o /dev/null --wrap "'sleep 30'")
    hold=$(ssh_ sbatch --parsable --hold -J probehold -t 1 -o /dev/null --wrap true)
    sleep 5
    ssh_ "scontrol -o show job $done_; scontrol -o show job $fail" >scontrol-ended.txt
    ssh_ "scontrol -o show job $run; scontrol -o show job $hold" >scontrol-live.txt
    ssh_ scancel "$run" "$hold"
fi
cat "sacct-over-memory-${DESC_SITE_PROCTRACK}.txt"
