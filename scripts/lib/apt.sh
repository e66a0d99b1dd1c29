# Shared apt helpers for the install scripts (sourced, not run). Loud on failure: apt's own
# output goes to a log that is printed whole when a step fails, so a fresh machine that cannot
# install something says exactly what apt said.
#
# apt_install PKG...   installs only the packages not yet installed (apt-get update first, once)
# apt_update           apt-get update, once per script run (apt_reset_update forces another)

APT_SUDO=()
if [[ $(id -u) -ne 0 ]]; then APT_SUDO=(sudo); fi
APT_CMD=("${APT_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
_apt_updated=0

# _apt_run LABEL CMD...: runs CMD with its output in a log; prints the log and fails on error.
_apt_run() {
  local label=$1 out rc=0
  shift
  out=$(mktemp)
  "$@" >"$out" 2>&1 || rc=$?
  if ((rc != 0)); then
    echo "${APT_LOG_PREFIX:-apt}: '$label' failed with exit code $rc; its output:" >&2
    cat "$out" >&2
    rm -f "$out"
    return "$rc"
  fi
  rm -f "$out"
}

apt_reset_update() { _apt_updated=0; }

apt_update() {
  if ((_apt_updated == 0)); then
    echo "${APT_LOG_PREFIX:-apt}: apt-get update"
    _apt_run "apt-get update" "${APT_CMD[@]}" update
    _apt_updated=1
  fi
}

# True when the package is installed (not merely known or half-removed).
apt_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    apt_installed "$pkg" || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then return 0; fi
  apt_update
  echo "${APT_LOG_PREFIX:-apt}: apt-get install ${missing[*]}"
  # policy-rc.d keeps post-install scripts from starting services (sshd, lighttpd, etcd, ...).
  local policy=/usr/sbin/policy-rc.d created=0 rc=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${APT_SUDO[@]}" tee "$policy" >/dev/null
    "${APT_SUDO[@]}" chmod 755 "$policy"
    created=1
  fi
  _apt_run "apt-get install ${missing[*]}" "${APT_CMD[@]}" install -y --no-install-recommends "${missing[@]}" || rc=$?
  if ((created)); then "${APT_SUDO[@]}" rm -f "$policy"; fi
  return "$rc"
}
