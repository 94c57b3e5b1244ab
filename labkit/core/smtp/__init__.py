"""SMTP's pure half: addresses as RFC 5321 reads them, and the relay policy (who may send where)."""
