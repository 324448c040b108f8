"""The fault suite: the whole pipeline as separate processes under steady load,
with components killed (SIGKILL) and restarted at seeded random moments, the bus's PostgreSQL
stopped and started, and the broker stopped while the outbox has work. Run it with
``python -m tests.faults --seed N``; ``tests/integration/test_faults.py`` runs it in CI.
"""
