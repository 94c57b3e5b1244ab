"""The lab floor: :class:`~labkit.lab.lab.Lab` (one sandbox, every host and process it starts),
its real-mode wiring, the background daemon and its state file, and the ``labkit`` command.

Imports every floor below it; nothing below imports it. This package imports nothing itself,
so that ``labkit status`` reads the state file without loading the servers.
"""
