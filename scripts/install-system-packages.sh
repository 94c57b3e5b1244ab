#!/usr/bin/env bash
# Install the Debian packages that real mode needs: Postfix, OpenDKIM, Dovecot, swaks, dig,
# the SASL modules and swaks' Perl TLS/SASL modules; and the mail clients tests/clients and
# chapter 06 drive (curl, msmtp, fetchmail, mbsync). One list for the test command, the
# docker image and anyone setting up a host by hand.
#
# Usage: sudo scripts/install-system-packages.sh [--check]
#   --check   only report which commands are missing (exit 1 if any), install nothing.
#
# Services are never started by the packages (policy-rc.d), and Postfix is preseeded to
# "No configuration": the lab runs every daemon from its own sandbox folder.
set -euo pipefail

PACKAGES=(
  postfix                 # the MTA (chapters 07-09, 13)
  postfix-lmdb postfix-cdb  # lmdb: and cdb: maps, where hash: (Berkeley DB) is gone (ERRATA 10)
  libsasl2-modules        # Postfix's client AUTH PLAIN/LOGIN to the smarthost
  opendkim opendkim-tools # DKIM signing milter, opendkim-genkey, opendkim-testkey
  dovecot-imapd dovecot-pop3d dovecot-lmtpd  # mailbox access and LMTP delivery
  swaks                   # the Swiss Army Knife for SMTP
  libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl  # swaks --tls / --auth
  bind9-dnsutils          # dig and nslookup
  openssl                 # openssl s_client -starttls smtp
  ca-certificates
  curl msmtp fetchmail isync  # the mail clients people run (tests/clients, chapter 06)
)
COMMANDS=(postfix postconf postmap opendkim opendkim-testkey dovecot swaks dig nslookup openssl
          curl msmtp fetchmail mbsync)

missing() {
  local c out=()
  for c in "${COMMANDS[@]}"; do
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || out+=("$c")
  done
  printf '%s\n' "${out[@]:-}"
}

if [ "${1:-}" = "--check" ]; then
  m=$(missing)
  if [ -n "$m" ]; then echo "missing: $(echo $m)"; exit 1; fi
  echo "all real-mode commands present"; exit 0
fi
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0
fi

if [ -z "$(missing)" ]; then
  echo "system packages: already installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: installing Debian packages needs root. Run: sudo $0" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "error: no apt-get here. Real mode needs Debian or Ubuntu, or the image in docker/." >&2
  exit 1
fi

# Keep package scripts from starting daemons (no init system in containers or CI).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string mail.example.com" | debconf-set-selections

echo "system packages: apt-get update"
apt-get update -qq
echo "system packages: installing ${PACKAGES[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
m=$(missing)
if [ -n "$m" ]; then echo "error: still missing after install: $m" >&2; exit 1; fi
echo "system packages: done"
