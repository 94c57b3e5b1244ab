"""From the lab to your own host: a site profile, a rehearsal with your names, a bundle, a doctor.

- :mod:`labkit.lab.site.profile` — ``mail-site.toml`` read and checked (:func:`load`, :class:`Profile`);
  the ISP password kept out of it (:func:`read_password`).
- :mod:`labkit.lab.site.plan` — what the site needs, rendered by the lab's own renderers
  (:class:`labkit.real.postfix.PostfixConfig`, :class:`labkit.real.opendkim.OpenDKIMConfig`, the SPF,
  DKIM and DMARC record builders, :class:`labkit.core.dns.Zone`): one code path for the lab and the host.
- :mod:`labkit.lab.site.bundle` — ``labkit bundle``: the files, commands and ``APPLY.md``, written atomically.
- :mod:`labkit.lab.site.checks` and :mod:`labkit.lab.site.doctor` — ``labkit doctor``: read-only checks of
  a host (or of a running lab), one row each with its fix.
- :mod:`labkit.lab.site.rehearse` — ``Lab(site=...)``: the lab world with your names.

Importing this package does no I/O. Chapters reach it through the face: ``from labkit import site``.
"""
from __future__ import annotations

from . import bundle, doctor
from .profile import EXAMPLE, PASSWORD_ENV, Profile, ProfileError, load, parse, read_password
from .rehearse import apply_bundle

__all__ = ["EXAMPLE", "PASSWORD_ENV", "Profile", "ProfileError", "load", "parse", "read_password",
           "bundle", "doctor", "apply_bundle"]
