#!/usr/bin/env bash
# ci/slurm-down.sh - stop what ci/slurm-up.sh started: cancel the cluster's jobs, then stop slurmd
# and slurmctld, slurmdbd, MariaDB and munged, each by its PID file and only when that PID really
# runs the daemon. Idempotent; packages and configuration stay, so the next slurm-up.sh is fast.
#   SLURM_PURGE_STATE=1: also delete job and node state, SLURM's logs and the accounting database.
set -u
# stop PIDFILE:NAME...: SIGTERM each daemon that runs, wait up to 15 s for all, SIGKILL the rest.
stop() {
  local pids="" spec file name p
  for spec in "$@"; do
    file=${spec%%:*} name=${spec#*:}
    if [ -s "$file" ] && grep -qx "$name" "/proc/$(cat "$file")/comm" 2>/dev/null; then
      p=$(cat "$file") && kill "$p" && pids="$pids $p"
    fi
    # Stale PID files go too (slurmctld and slurmdbd drop root and cannot delete their own; a
    # stale /run/slurmctld.pid makes `apt-get purge slurmctld` fail: its prerm runs scancel).
    rm -f "$file"
  done
  for _ in $(seq 150); do
    local left=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
    pids=$left
    [ -z "$pids" ] && return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086  # one argument per PID
  kill -9 $pids 2>/dev/null || true
}
if [ -s /run/slurmctld.pid ] && grep -qx slurmctld "/proc/$(cat /run/slurmctld.pid)/comm" 2>/dev/null; then
  jobs=$(squeue -h -o %i 2>/dev/null)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086  # one argument per job id
    scancel --full $jobs 2>/dev/null || true   # no orphaned job steps
    for _ in $(seq 30); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
  fi
fi
stop /run/slurmd.pid:slurmd /run/slurmctld.pid:slurmctld
stop /run/slurmdbd.pid:slurmdbd
if [ "${SLURM_PURGE_STATE:-0}" = 1 ]; then
  rm -rf /var/lib/slurm/slurmctld/* /var/lib/slurm/slurmd/* /var/log/slurm/*
  mariadb -e 'DROP DATABASE IF EXISTS slurm_acct_db' 2>/dev/null || true
fi
stop /run/mysqld/mysqld.pid:mariadbd /run/munge/munged.pid:munged
echo "[slurm-down] stopped"
