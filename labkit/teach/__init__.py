"""The teaching floor: what the chapters show and check.

Transcripts and tables (:mod:`.display`), DNS and TLS views (:mod:`.dnsview`, :mod:`.tlsview`),
the agents (:mod:`.agents`), SASL by hand (:mod:`.sasl`), break-and-fix drills
(:mod:`.breakfix`), the relay test (:mod:`.relaytest`), sender authentication end to end
(:mod:`.senderauth`) and the exercise checkers (:mod:`.exercises`). May import every floor below.
"""
