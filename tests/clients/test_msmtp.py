"""msmtp, the sendmail of many a desktop and cron job: submission with STARTTLS (587) and with
implicit TLS (465). ``host`` is the lab address and ``tls_host_override`` the name the
certificate must carry."""
from __future__ import annotations

import pytest

from .conftest import ALICE, ALICE_PW, HOME_NAME, client, holdings, message, other_ca, run, wait_for


def msmtprc(lab, workdir, role: str, *, password: str = ALICE_PW, ca: str | None = None) -> str:
    """~/.msmtprc for the lab (only the lines that matter), written 0600 as msmtp insists."""
    svc = lab.services[role]
    rc = workdir / f"msmtprc-{role}"
    rc.write_text(f"""account lab
host {svc.host}
port {svc.port}
tls on
tls_starttls {'on' if role == 'submission' else 'off'}
tls_trust_file {ca or lab.ca_path}
tls_host_override {HOME_NAME}
auth plain
user {ALICE}
password {password}
from {ALICE}
""")
    rc.chmod(0o600)
    return str(rc)


@pytest.mark.parametrize("role", ["submission", "submissions"])
def test_send(lab, workdir, role):
    tag = f"msmtp-{role}"
    p = run([client("msmtp"), "-C", msmtprc(lab, workdir, role), "-a", "lab", ALICE], workdir,
            input=message(f"msmtp through {role}", tag, sender=ALICE))
    assert p.returncode == 0, p.stderr
    assert wait_for(lab, f"<{tag}@clients.example.org>").subject == f"msmtp through {role}"


def test_wrong_password_and_wrong_ca_are_refused(lab, workdir):
    before = holdings(lab)
    mail = message("never sent", "msmtp-refused", sender=ALICE)
    p = run([client("msmtp"), "-C", msmtprc(lab, workdir, "submission", password="not-the-password"),
             "-a", "lab", ALICE], workdir, input=mail)
    assert p.returncode == 77, p.stderr  # EX_NOPERM: authentication failed
    for ca in ("/etc/ssl/certs/ca-certificates.crt", str(other_ca(workdir))):
        p = run([client("msmtp"), "-C", msmtprc(lab, workdir, "submissions", ca=ca), "-a", "lab", ALICE],
                workdir, input=mail)
        assert p.returncode != 0 and "certificate" in p.stderr, p.stderr
    assert holdings(lab) == before
