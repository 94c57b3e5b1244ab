"""From the lab to your own host: a site profile, a rehearsal with your names, a bundle, a doctor.

- :mod:`labkit.site.profile` — ``mail-site.toml`` read and checked (:func:`load`, :class:`Profile`);
  the ISP password kept out of it (:func:`read_password`).
- :mod:`labkit.site.plan` — what the site needs, rendered by the lab's own renderers
  (:class:`labkit.postfix.PostfixConfig`, :class:`labkit.opendkim.OpenDKIMConfig`, the SPF,
  DKIM and DMARC record builders, :class:`labkit.dns.Zone`): one code path for the lab and the host.
- :mod:`labkit.site.bundle` — ``labkit bundle``: the files, commands and ``APPLY.md``, written atomically.
- :mod:`labkit.site.checks` and :mod:`labkit.site.doctor` — ``labkit doctor``: read-only checks of
  a host (or of a running lab), one row each with its fix.
- :mod:`labkit.site.rehearse` — ``Lab(site=...)``: the lab world with your names.

Importing this package does no I/O.
"""
from __future__ import annotations

from .profile import EXAMPLE, PASSWORD_ENV, Profile, ProfileError, load, parse, read_password

__all__ = ["EXAMPLE", "PASSWORD_ENV", "Profile", "ProfileError", "load", "parse", "read_password"]
