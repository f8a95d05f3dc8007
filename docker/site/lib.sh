# Shared settings and helpers of docker/site/{up,down,status}. Sourced, not run.
#
# Everything the site writes lives under one state directory, $DESC_SITE_DIR:
#   etc/      generated configs (slurm.conf per cluster, slurmdbd.conf, sshd configs, munge key)
#   run/      pidfiles and sockets
#   log/      one log per daemon
#   ssh/      host keys, the client key, known_hosts, authorized_keys
#   slurm/    slurmctld state and slurmd spool, per cluster
#   mariadb/  the accounting database; pg/meta, pg/history: the two PostgreSQL clusters
#   redis/    Redis's working directory (the Celery broker of a distributed Airflow)
#   home/     the login user's home (job outputs land here)
#   env.sh    the environment (Airflow connections, URIs) for tests and the demo

DESC_SITE_DIR=${DESC_SITE_DIR:-/var/lib/airflow-desc-site}
SITE_USER=${DESC_SITE_USER:-desc}
SITE_ACCOUNT=${DESC_SITE_ACCOUNT:-desc}

# Ports (all on 127.0.0.1); each can be overridden from the environment.
PORT_DBD=${DESC_SITE_PORT_DBD:-16819}
PORT_MARIADB=${DESC_SITE_PORT_MARIADB:-16306}
PORT_PM_CTLD=${DESC_SITE_PORT_PM_CTLD:-16817}
PORT_PM_SLURMD=${DESC_SITE_PORT_PM_SLURMD:-16818}
PORT_PM_SLURMD2=${DESC_SITE_PORT_PM_SLURMD2:-16830}
PORT_S3_CTLD=${DESC_SITE_PORT_S3_CTLD:-16827}
PORT_S3_SLURMD=${DESC_SITE_PORT_S3_SLURMD:-16828}
PORT_SSH_PM=${DESC_SITE_PORT_SSH_PM:-2222}
PORT_SSH_S3=${DESC_SITE_PORT_SSH_S3:-2223}
PORT_SSH_BASTION=${DESC_SITE_PORT_SSH_BASTION:-2224}
PORT_PG_META=${DESC_SITE_PORT_PG_META:-15432}
PORT_PG_HISTORY=${DESC_SITE_PORT_PG_HISTORY:-15433}
PORT_REDIS=${DESC_SITE_PORT_REDIS:-16379}

# The two clusters. perlmutter: NERSC-like, two nodes (pm-n1, pm-n2: one slurmd each, Debian's
# slurmd is built with multiple-slurmd support) of 2 cores at 2 GB/core, short walltime; jobs go
# to pm-n1 first (Weight), pm-n2 takes what pm-n1 cannot (a node failure's resubmission).
# s3df: SLAC-like, 1 core with more memory per core, longer walltime, EnforcePartLimits=ALL.
CLUSTERS="perlmutter s3df"

ETC=$DESC_SITE_DIR/etc
RUN=$DESC_SITE_DIR/run
LOG=$DESC_SITE_DIR/log
SSHDIR=$DESC_SITE_DIR/ssh

# chromium: the headless browser the UI tests read the status page with; redis-server: the broker
# of the CeleryExecutor deployment the e2e tests run (tests/deploy.py); podman, uidmap (newuidmap,
# for rootless podman's user namespace) and runc (crun, podman's default, refuses hybrid cgroup hosts):
# the container engine of jobs with an image (docker/site/payload-image).
APT_PACKAGES="slurm-wlm slurmdbd munge mariadb-server openssh-server postgresql chromium redis-server podman uidmap runc"

say() { printf '[site] %s\n' "$*"; }
warn() { printf '[site] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[site] ERROR: %s\n' "$*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "the local site starts system daemons (slurmctld, sshd, mariadb, postgres): run it as root or with sudo, e.g. 'sudo $0'"
}

# Alive and not a zombie (PID 1 here reaps late, so kill -0 alone lies after a stop).
pid_alive() {
    local pid=$1 stat
    [ -n "$pid" ] || return 1
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    case "$stat" in Z*|"") return 1 ;; esac
    return 0
}

# pidfile_alive FILE: the pidfile names a live process that is one of the site's daemons. After a
# crash (or a machine whose processes were all killed) a stale pidfile may name a reused PID.
pidfile_alive() {
    local f=$1 pid comm
    [ -s "$f" ] || return 1
    pid=$(head -n1 "$f" | tr -d ' ')
    pid_alive "$pid" || return 1
    comm=$(ps -o comm= -p "$pid" 2>/dev/null)
    case "$comm" in munged|mariadbd|mysqld|slurmdbd|slurmctld|slurmd|sshd|postgres|redis-server) return 0 ;; esac
    return 1
}

# True when something listens on 127.0.0.1:PORT.
port_busy() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

port_owner() {
    if command -v ss >/dev/null 2>&1; then
        ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n1
    fi
}

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.3 s until it succeeds.
# With WATCH_PIDFILE set, give up at once when the daemon in that pidfile has died.
wait_until() {
    local limit=$1 what=$2 start
    shift 2
    start=$(date +%s)
    until "$@" >/dev/null 2>&1; do
        if [ $(( $(date +%s) - start )) -ge "$limit" ]; then
            return 1
        fi
        if [ -n "${WATCH_PIDFILE:-}" ] && [ -s "$WATCH_PIDFILE" ] && ! pidfile_alive "$WATCH_PIDFILE"; then
            return 1
        fi
        sleep 0.3
    done
}

# stop_pidfile NAME PIDFILE: TERM, wait up to 20 s, then KILL.
stop_pidfile() {
    local name=$1 f=$2 pid i
    if ! pidfile_alive "$f"; then
        rm -f "$f"
        return 0
    fi
    pid=$(head -n1 "$f" | tr -d ' ')
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        pid_alive "$pid" || break
        sleep 0.2
    done
    if pid_alive "$pid"; then
        warn "$name (pid $pid) did not stop on TERM within 20 s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$f"
    say "stopped $name (pid $pid)"
}

pg_bindir() {
    local v
    v=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n1)
    [ -n "$v" ] && echo "/usr/lib/postgresql/$v/bin"
}

cluster_conf() { echo "$ETC/$1/slurm.conf"; }
# Every node of a cluster, the first one first.
cluster_nodes() { case $1 in perlmutter) echo pm-n1 pm-n2 ;; s3df) echo s3df-n1 ;; esac; }
node_port() {
    case $1 in pm-n1) echo "$PORT_PM_SLURMD" ;; pm-n2) echo "$PORT_PM_SLURMD2" ;; s3df-n1) echo "$PORT_S3_SLURMD" ;; esac
}
# One slurmd per node: its pidfile (SlurmdPidFile=$RUN/slurmd-%n.pid).
slurmd_pidfile() { echo "$RUN/slurmd-$1.pid"; }
cluster_ssh_port() { case $1 in perlmutter) echo "$PORT_SSH_PM" ;; s3df) echo "$PORT_SSH_S3" ;; esac; }
