"""SMTP in the lab: the server roles, Maildir storage, the relay queue and a recording client."""
