"""The sans-IO floor: what the lab knows, as pure functions and dataclasses.

The lab's world (:mod:`.world`), recorded dialogues (:mod:`.transcript`), ``Received:`` lines
(:mod:`.trace`), keys and certificates (:mod:`.pki`), addresses and the relay policy
(:mod:`.smtp`), DNS zones and the resolver (:mod:`.dns`), sender authentication
(:mod:`.auth`), and IMAP's grammar (:mod:`.imap`). Modules here import only the foundation (``labkit.errors``, ``labkit.result``,
``labkit.files``) and each other; no server, no process, no notebook helper.
"""
