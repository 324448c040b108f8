"""The pipeline bench's pure parts: percentiles, the reconciler's figure, the target verdicts
(the signing ratio among them): a missed target must print as MISSED, never as met."""

from __future__ import annotations

from bench.peers import Measured
from bench.pipeline_bench import percentile, sessions
from bench.report import Result, median, rates
from bench.signatures_bench import Costs
from bench.summary import Figures, reconciler_figure, scaling_bound, summarise


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0


def test_reconciler_figure_from_its_printed_row() -> None:
    lines = ["== reconciler state: ...",
             "  reconciler state in PostgreSQL (table + index)      412        0.38   2.10"]
    assert reconciler_figure(lines) == ("0.38 GiB in PostgreSQL (412 B/entity on disk, 2.10x a "
                                        "plain dict of the raw values in memory); the process "
                                        "holds one batch")
    assert reconciler_figure(["nothing here"]) is None


def figures(one: float, two: float, p99: float) -> Figures:
    f = Figures(n=1000)
    f.one, f.two = Result("1", 1000, 1000 / one), Result("2", 1000, 1000 / two)
    f.deliveries_per_event = 2.0
    f.latency = (50.0, p99, 900, 1000.0)
    f.peers = [Measured("confluent-kafka consume→produce loop", Result("c", 1, 1 / 70000)),
               Measured("faust passthrough agent", Result("f", 1, 1 / 4000)),
               Measured("Quix Streams passthrough", None, "pip install failed"),
               Measured("Bytewax passthrough", Result("b", 1, 1 / 90000))]
    return f


def test_targets_marked_by_what_was_measured() -> None:
    out: list[str] = []
    summarise(figures(one=9000, two=13000, p99=300), out.append)
    text = "\n".join(out)
    line = {label: next(x for x in out if label in x) for label in
            ("floor:", "goal:", "2 workers ≥", "p99 <")}
    assert line["floor:"].endswith("met")          # 9000 ≥ 2 × 4000
    assert "not measured" in line["goal:"]          # Quix did not run: no number made up
    assert line["2 workers ≥"].endswith("MISSED")  # 13000 / 9000 = 1.44 < 1.6
    assert not any("log sink" in x for x in out)   # no target for a stage that is gone
    assert line["p99 <"].endswith("MISSED")        # 300 ms
    assert "not measured: pip install failed" in text


def test_floor_missed() -> None:
    out: list[str] = []
    summarise(figures(one=3000, two=6000, p99=100), out.append)
    assert next(x for x in out if "floor:" in x).endswith("MISSED")
    assert next(x for x in out if "2 workers ≥" in x).endswith("met")
    assert next(x for x in out if "p99 <" in x).endswith("met")


def test_a_figure_of_several_runs_is_the_median_run() -> None:
    runs = [Result("r", 1000, s) for s in (0.5, 0.2, 0.4)]
    assert median(runs).seconds == 0.4                    # not the fastest
    assert median(runs[:2]).seconds == 0.5                # of two, the slower
    assert median(runs[:1]).seconds == 0.5
    assert rates(runs) == "2,000 / 5,000 / 2,500"         # in the order they ran


def test_scaling_bound_from_the_cores_busy() -> None:
    one = Result("1", 1000, 0.1, busy_cores=1.6)
    two = Result("2", 1000, 0.1, busy_cores=1.98)
    line = scaling_bound(one, two, 2)
    assert line is not None
    assert "1 worker 1.60, 2 workers 1.98 of 2" in line
    assert "needs 3.20" in line
    assert line.endswith("ceiling 1.25x")                          # 2 / 1.6
    assert scaling_bound(Result("1", 1, 1, busy_cores=0.5), two, 8).endswith("ceiling 2.00x")
    assert scaling_bound(Result("1", 1, 1), two, 2) is None        # not measured: no line
    out: list[str] = []
    f = figures(one=9000, two=9500, p99=100)
    f.one, f.two = (Result("1", 1000, 1000 / 9000, busy_cores=1.6),
                    Result("2", 1000, 1000 / 9500, busy_cores=2.0))
    summarise(f, out.append)
    at = next(i for i, x in enumerate(out) if "2 workers ≥" in x)
    assert "ceiling" in out[at + 1]                                # under its target


def test_cpu_per_event_and_the_work_against_quix() -> None:
    f = figures(one=10000, two=10500, p99=100)
    f.one = Result("1", 10000, 1.0, busy_cores=1.5)                  # 150 µs per event
    f.peers[2] = Measured("Quix Streams passthrough", Result("q", 50000, 1.0, busy_cores=1.25))
    assert f.one.cpu_us == 150.0 and Result("x", 10, 1.0).cpu_us is None
    out: list[str] = []
    summarise(f, out.append)
    cpu = next(x for x in out if "CPU µs per event" in x)
    assert "governed 1 worker 150" in cpu and "; Quix 25" in cpu
    assert "router alone" not in cpu                                 # not measured: not shown
    at = next(i for i, x in enumerate(out) if "goal:" in x)
    assert out[at + 1].strip().startswith("CPU per event: governed 150 µs, the peer 25 µs")
    assert out[at + 1].endswith("6.0x the work per event")


def test_the_signing_ratio_and_both_figures() -> None:
    f = figures(one=9000, two=13000, p99=100)                     # signed: 9,000 events/s
    f.unsigned = Result("u", 1000, 1000 / 10000)                  # unsigned: 10,000
    f.signed_runs = [Result("s", 1000, 1000 / r) for r in (9000, 8800, 9100)]
    f.unsigned_runs = [Result("u", 1000, 1000 / r) for r in (10000, 9900, 10200)]
    f.signing = Costs(3.6, 7.0, 92.0, 6.2, 27.0, 90.0).summary()
    out: list[str] = []
    summarise(f, out.append)
    at = next(i for i, x in enumerate(out) if "signing: 1 worker signed ≥ 0.85× unsigned" in x)
    assert out[at].split()[-2:] == ["0.90x", "met"]               # 9,000 / 10,000
    assert out[at + 1].strip().startswith("signed 9,000 events/s, unsigned 10,000 events/s")
    assert "runs: 9,000 / 8,800 / 9,100; unsigned 10,000 / 9,900 / 10,200" in out[at + 1]
    assert out[at + 1].endswith("run by run, alternating: 0.90x / 0.89x / 0.89x)")
    assert "Signer.sign 3.6 µs, Verifier.check 7.0 µs" in out[at + 2]
    assert "publisher's signing cost is measured separately" in out[at + 3]
    assert next(x for x in out if "floor:" in x).endswith("met")  # from the signed figure
    row = next(x for x in out if "1 worker without signatures" in x)
    assert "10,000" in row


def test_the_signing_ratio_missed_or_not_measured() -> None:
    f = figures(one=8000, two=13000, p99=100)
    f.unsigned = Result("u", 1000, 1000 / 10000)                  # 0.80 < 0.85
    out: list[str] = []
    summarise(f, out.append)
    assert next(x for x in out if "signing: 1 worker" in x).endswith("0.80x  MISSED")
    out = []
    summarise(figures(one=8000, two=13000, p99=100), out.append)  # no unsigned figure
    assert next(x for x in out if "signing: 1 worker" in x).endswith("not measured")
    assert next(x for x in out if "1 worker without signatures" in x).endswith("not measured")


def test_signed_and_unsigned_runs_alternate_in_pairs() -> None:
    """S U, U S, S U: each signed run beside an unsigned one, same-kind neighbours in one
    session (one worker process each), so 3 runs of each take 4 sessions, not 6."""
    assert sessions(1) == [(True, 1), (False, 1)]
    assert sessions(3) == [(True, 1), (False, 2), (True, 2), (False, 1)]
    for k in range(1, 7):
        got = sessions(k)
        assert sum(c for s, c in got if s) == sum(c for s, c in got if not s) == k
        assert got[0] == (True, 1)  # the latency phase opens a signed session


def test_the_log_writers_time_is_read_against_routing_from_the_workers_stopped_lines() -> None:
    import json
    from types import SimpleNamespace

    from bench.pipeline_bench import log_against_routing

    def worker(log_us: int, decide_us: int) -> SimpleNamespace:
        stats = {"hotpath": {"log write us": log_us, "decide us": decide_us}, "cases_sink": {}}
        return SimpleNamespace(stopped="stopped " + json.dumps({"errors": [], "stats": stats}))

    assert log_against_routing([worker(300_000, 1_000_000), worker(200_000, 1_000_000)]) == \
        (0.5, 2.0)
    assert log_against_routing([SimpleNamespace(stopped="")]) is None
