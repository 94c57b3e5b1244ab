"""Clients that record every line they send and receive: SMTP (:mod:`.smtp`), POP3 and IMAP
(:mod:`.retrieval`), on a shared line reader (:mod:`.lineclient`)."""
