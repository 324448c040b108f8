"""govbus core: what every other package shares.

Configuration, errors, identifiers (Art. 12), the catalogue model (Art. 3, 4, 7, 8, 13),
the change-event envelope, Avro serde in the Confluent wire format and the schema registry.
Nothing here imports from ``producers``, ``consumers``, ``stream_apps`` or ``govbus``.
"""
