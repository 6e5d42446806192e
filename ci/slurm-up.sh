#!/usr/bin/env bash
# ci/slurm-up.sh - bring up a real single-node SLURM cluster on localhost, for CI and for trying
# profiles/slurm on a workstation. Debian/Ubuntu, run as root; needs no systemd and no cgroups.
#
# Installs munge, slurmctld, slurmd, slurm-client, slurmdbd and mariadb-server (apt) when missing,
# writes /etc/slurm/{slurm,gres,slurmdbd}.conf, starts the daemons (they stay up after this script
# exits; ci/slurm-down.sh stops them) and waits until `sinfo` shows the node idle, `sacct` answers
# and a one-second `srun` succeeds. Idempotent: when everything is already up it only checks.
#
# Cluster: ClusterName=ci, one node `localhost` with this machine's CPUs and 90% of its memory,
# one partition `debug` (the default), accounting (slurmdbd + MariaDB) so that `sacct` works: it is
# the executor plugin's status command and the only record of finished jobs (job comments are
# stored too: the plugin puts the rule and wildcards there).
#   FAKE_GPUS=N (default 2): declare N gres/gpu backed by dummy device files (CPU-only machines),
#                            so rules with `resources: gpu=1` can be scheduled; 0 declares none.
set -euo pipefail
NGPU=${FAKE_GPUS:-2}
CIDIR=/var/lib/slurm-ci            # dummy GPU device files, MariaDB's log
log() { echo "[slurm-up] $*"; }
# alive PIDFILE: the PID in the file runs the daemon the file is named after (PID files go stale:
# slurmctld and slurmdbd drop root and cannot delete their own /run/*.pid)
alive() { [ -s "$1" ] && grep -qx "$(basename "$1" .pid)" "/proc/$(cat "$1")/comm" 2>/dev/null; }
die() {
  echo "[slurm-up] ERROR: $*" >&2
  for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/slurm/slurmdbd.log \
    "$CIDIR/mariadb.log"; do
    [ -f "$f" ] && { echo "--- last lines of $f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}
[ "$(id -u)" = 0 ] || { echo "[slurm-up] ERROR: run as root" >&2; exit 1; }
start=$SECONDS

# 1. packages (skipped when installed)
pkgs="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
missing=()
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  # Container images often carry a policy-rc.d that stops postinst scripts from starting
  # services; the daemons are started below either way.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
install -d -m 0755 "$CIDIR"

# 2. munge (Debian's postinst creates /etc/munge/munge.key)
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null || die "munge does not work"

# 3. configuration (written to *.new, moved in only when it differs: daemons restart on change)
hw=$(slurmd -C | head -n1)   # NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. .. RealMemory=..
realmem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hw")
topo=$(sed -E 's/^NodeName=[^ ]+ //; s/ ?RealMemory=[0-9]+//' <<<"$hw")
mem=$((realmem * 90 / 100))
gres="" grestypes=""
: >/etc/slurm/gres.conf.new
if [ "$NGPU" -gt 0 ]; then
  # gres/gpu needs File=<character device>: slurmd drops file-less GPUs and rejects regular
  # files. Device nodes with /dev/null's numbers serve.
  for i in $(seq 0 $((NGPU - 1))); do
    [ -c "$CIDIR/gpu$i" ] || mknod -m 0666 "$CIDIR/gpu$i" c 1 3
  done
  gres=" Gres=gpu:$NGPU" grestypes="GresTypes=gpu"
  echo "NodeName=localhost Name=gpu File=$CIDIR/gpu[0-$((NGPU - 1))]" >/etc/slurm/gres.conf.new
fi
cat >/etc/slurm/slurm.conf.new <<CONF
# Written by ci/slurm-up.sh: single-node cluster on localhost, no systemd, no cgroups.
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
$grestypes
NodeName=localhost NodeAddr=127.0.0.1 $topo RealMemory=$mem$gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
cat >/etc/slurm/slurmdbd.conf.new <<'CONF'
# Written by ci/slurm-up.sh.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmci
StorageLoc=slurm_acct_db
CONF
changed=""
for f in slurm.conf gres.conf slurmdbd.conf; do
  if cmp -s "/etc/slurm/$f.new" "/etc/slurm/$f"; then
    rm "/etc/slurm/$f.new"
  else
    mv "/etc/slurm/$f.new" "/etc/slurm/$f" && changed="$changed $f"
  fi
done
chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 0600 /etc/slurm/slurmdbd.conf
install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/log/slurm
install -d /var/lib/slurm/slurmd

stop() {
  alive "$1" || return 0
  local p; p=$(cat "$1"); kill "$p"
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p"
}
if [ -n "$changed" ]; then
  log "configuration changed:$changed; restarting daemons"
  stop /run/slurmd.pid; stop /run/slurmctld.pid
  [[ "$changed" == *slurmdbd.conf* ]] && stop /run/slurmdbd.pid
fi

# 4. accounting: MariaDB + slurmdbd (slurmctld registers cluster `ci` and account `root` itself)
install -d -o mysql -g root -m 0755 /run/mysqld
if ! mariadb-admin ping >/dev/null 2>&1; then
  setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
    >"$CIDIR/mariadb.log" 2>&1 </dev/null &
  for _ in $(seq 120); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.5; done
  mariadb-admin ping >/dev/null 2>&1 || die "MariaDB did not start"
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmci';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
alive /run/slurmdbd.pid || slurmdbd
for _ in $(seq 60); do sacctmgr -n -P list cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -n -P list cluster >/dev/null 2>&1 || die "slurmdbd does not answer"

# 5. slurmctld + slurmd (they daemonize: no -D, so CI's stdout is not held open)
alive /run/slurmctld.pid || slurmctld
alive /run/slurmd.pid || slurmd -N localhost   # -N: the node name, whatever `hostname` says
st=""
for _ in $(seq 60); do
  st=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
  case "$st" in
    idle | mix | alloc) break ;;
    drain* | drng | down* | inval*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
case "$st" in idle | mix | alloc) ;; *) die "node state is '$st'" ;; esac
for _ in $(seq 30); do sacctmgr -n -P list cluster format=cluster | grep -qx ci && break; sleep 1; done
sacct -X -n >/dev/null || die "sacct does not work"

# 6. smoke test: a job step runs and accounting records it
timeout 60 srun -t 1 -n1 true || die "srun smoke test failed"
log "up in $((SECONDS - start)) s: $(sinfo -h -o 'partition=%P state=%t node=%N cpus=%c mem=%m gres=%G')"
