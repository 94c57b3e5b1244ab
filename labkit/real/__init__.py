"""The real floor: Postfix, OpenDKIM and Dovecot run from the lab's sandbox, and the memo's tools.

Processes (:mod:`.procs`), the command-line tools (:mod:`.tools`), and one package a daemon:
:mod:`.postfix`, :mod:`.opendkim`, :mod:`.dovecot` (typed configuration, a runner, its log).
Imports the floors below it (foundation, :mod:`labkit.core`, :mod:`labkit.net`).
"""
