"""govbus benchmarks: ``python -m bench`` (or ``make bench``).

Every figure is measured in the same run as its baseline and printed as a ratio against it,
so the numbers compare across machines: the hot path judging (no grants) against a plain
confluent-kafka consume→produce loop, the verdict against bare Avro decoding, the publisher
against a raw producer sending pre-encoded bytes, the governed pipeline against faust, Quix
Streams and Bytewax passthroughs. See ``bench/README.md``.
"""
