"""The embedded floor: the lab's own servers and clients on loopback, in one event loop.

The loop thread (:mod:`.loop`), the base of every server (:mod:`.serverbase`), what every role
shares (:mod:`.context`, :mod:`.events`), the DNS server (:mod:`.dnsserver`), the SMTP roles
and relay queue (:mod:`.smtp`), POP3, IMAP and Maildir (:mod:`.mailbox`), and the recording
clients (:mod:`.clients`). Imports the foundation and :mod:`labkit.core` only.
"""
