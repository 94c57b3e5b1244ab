"""The ``labkit bundle`` and ``labkit doctor`` commands (``labkit up --site`` is in labkit.lab.cli)."""
from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from ...errors import LabError
from ..state import running_state
from . import bundle, doctor
from .profile import load, read_password

BUNDLE_EPILOG = """examples:
  labkit bundle --site mail-site.toml --out bundle      # then read bundle/APPLY.md
  MAIL_SITE_PASSWORD=... labkit bundle --site mail-site.toml --out bundle   # sasl_passwd filled in

The ISP password is never in the profile. It is taken from the profile's password_file (0600),
else MAIL_SITE_PASSWORD, else asked with --ask-password; without any, postfix/sasl_passwd is a
template to fill in on the host. It is written to postfix/sasl_passwd (0600) and nowhere else."""

DOCTOR_EPILOG = """examples:
  labkit doctor --site mail-site.toml                   # this host, after the bundle was applied
  labkit doctor --site mail-site.toml --online --login  # also talk to the smarthost and log in
  labkit doctor --lab mail-lab --json                   # a rehearsal started with labkit up --site

Read-only. Exit status: 0 every check passed, 1 warnings, 2 failures (or the checks could not run)."""


class DoctorError(Exception):
    pass


def cmd_bundle(a: argparse.Namespace) -> int:
    profile = load(a.site)
    password = read_password(profile, ask=getpass.getpass if a.ask_password else None)
    start = time.perf_counter()
    out = bundle.write(profile, a.out, password, force=a.force)
    took = time.perf_counter() - start
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(files)} files to {out} in {took * 1000:.0f} ms"
          f" (sasl_passwd: {'with the password' if password else 'a template: fill in the password on the host'})")
    for name in files:
        print(f"  {name}")
    print(f"next: read {out / 'APPLY.md'}")
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    try:
        if a.lab:
            st, _stale = running_state(Path(a.lab).resolve())
            if st is None:
                raise DoctorError(f"no lab is running in {a.lab}; start one with: labkit up --site FILE --dir {a.lab}")
            findings = doctor.examine_lab(st, login=a.login)
        else:
            if not a.site:
                raise DoctorError("give --site mail-site.toml (this host) or --lab DIR (a rehearsal)")
            profile = load(a.site)
            findings = doctor.examine_host(profile, postfix_dir=a.postfix_dir, opendkim_conf=a.opendkim_conf,
                                           nameserver=a.nameserver, local=not a.no_local, dns=not a.no_dns,
                                           online=a.online or a.login, login=a.login)
    except (DoctorError, LabError) as e:
        print(f"labkit doctor: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(doctor.render_json(findings) if a.json else doctor.render_rows(findings))
    return doctor.exit_status(findings)


def add_parsers(sub) -> None:
    sp = sub.add_parser("bundle", help="write what to apply to your host (from mail-site.toml)",
                        epilog=BUNDLE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--site", required=True, metavar="FILE", help="the site profile (see examples/mail-site.toml)")
    sp.add_argument("--out", required=True, metavar="DIR", help="a new folder for the bundle")
    sp.add_argument("--force", action="store_true", help="replace DIR if it exists")
    sp.add_argument("--ask-password", action="store_true",
                    help="ask for the ISP password (when there is no password_file or MAIL_SITE_PASSWORD)")
    sp.set_defaults(func=cmd_bundle)
    sp = sub.add_parser("doctor", help="check a host (or a rehearsal lab) after the bundle; read-only",
                        epilog=DOCTOR_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--site", metavar="FILE", help="the site profile the host was set up from")
    sp.add_argument("--lab", metavar="DIR", help="check a running lab started with labkit up --site instead")
    sp.add_argument("--json", action="store_true", help="a JSON list of {id, status, why, section, fix}")
    sp.add_argument("--nameserver", metavar="IP[:PORT]", help="ask this DNS server (default: the system's)")
    sp.add_argument("--online", action="store_true", help="also talk to the profile's smarthost (EHLO, STARTTLS)")
    sp.add_argument("--login", action="store_true", help="also log in to the smarthost with sasl_passwd's login")
    sp.add_argument("--postfix-dir", default="/etc/postfix", metavar="DIR")
    sp.add_argument("--opendkim-conf", default="/etc/opendkim.conf", metavar="FILE")
    sp.add_argument("--no-local", action="store_true", help="skip the checks of local files")
    sp.add_argument("--no-dns", action="store_true", help="skip the DNS checks")
    sp.set_defaults(func=cmd_doctor)
