"""govbus benchmarks: ``python -m bench`` (or ``make bench``).

Every figure is measured in the same run as its baseline and printed as a ratio against it,
so the numbers compare across machines: the gate against a plain confluent-kafka
consume→produce loop, the gate's verdict against bare Avro decoding, the publisher against a
raw producer sending pre-encoded bytes. See ``bench/README.md``.
"""
