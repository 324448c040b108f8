"""The duties app (faust-streaming): notices of what happens in the control plane and of the
statutory deadlines, to ``notices.<agency>`` and the agencies' inboxes (Art. 13, 14, 18, 19,
20, 24, 26, 28, 29, 31; docs/operations.md, "Duties"; docs/adr/0012-duties-on-faust.md).

- :mod:`.events`: control events, and what an audited row change means (pure);
- :mod:`.notices`: who is told what, and the notice's id (pure);
- :mod:`.timers`: the facts of time at a moment (deadlines, expiries, reviews, staleness, the
  yearly reports);
- :mod:`.store`: what the app keeps in PostgreSQL (migration 0020);
- :mod:`.work`: the relay from the audit ledger, the timers' publishing, keeping a notice;
- :mod:`.app`: the faust app, its agent and its timers.

The entry point is ``python -m govbus.duties``, in the application layer, which gives the app
the report code (``govbus.reports``) it drafts the yearly reports with.
"""
