"""Fixed text of ``docs/benchmarks.md``: the method, and the analysis of missed targets.

The analysis was written from the profiles described in it; the numbers in the
tables above it come from the run that generated the page.
"""

METHOD = """## Method

- **Peers**, each from PyPI: `trubrics_mp` (this project), the official `trubrics` 1.8.5,
  `posthog`, `segment-analytics-python`. Batch size 100 everywhere (`flush_at`,
  `flush_batch_size`, `upload_size`); flush interval 1 s for both Trubrics clients (1.8.5's
  minimum), 0.5 s for PostHog and Segment; everything else at each peer's defaults.
- **Event**, the same for all: a `Generation` event of one user with properties `$thread_id`,
  `$assistant_id`, a 200-character `$text`, a cost and a token count (about 400 bytes of
  JSON). Throughput runs add a `bench_key` property so the sink can count duplicates.
- **API**: a minimal stdlib sink (`benchmarks/sink.py`), not the project's collector: the
  collector only speaks the Trubrics API and stores every event in SQLite, which would be the
  bottleneck. The sink is a `ThreadingHTTPServer` in its own process, HTTP/1.1 keep-alive,
  one `send()` per response with `TCP_NODELAY` (otherwise each keep-alive response waits
  about 40 ms for a delayed ACK), answers 200 to any POST, counts events per peer format
  (a JSON list for Trubrics, `{"batch": [...]}` for PostHog and Segment) and sleeps an
  artificial latency when the URL says so. Every client gets its own URL prefix, so counts
  never mix.
- **Processes**: each measurement runs in a fresh interpreter per peer
  (`benchmarks/jobs.py`), so no peer's background threads disturb another's; the sink is
  separate. The runner tags every process it starts and stops them all at the end, on error
  too (SIGTERM, then SIGKILL).
- **1. `track()` cost**: `time.perf_counter_ns()` around each call; calls come in bursts of
  100 with a 5 ms pause between bursts (an application that does other work), so every peer
  runs in its steady state rather than with a full queue. Rounds are interleaved (peer A,
  B, C, D, repeated); between rounds each peer flushes, untimed. Reported: medians of the
  rounds' p50, p99 and p99.9.
- **6.** The same rounds against a sink answering in 500 ms, then against a closed port; no
  flush between rounds there (the official SDK's flush sleeps 5 s per failed post).
- **2. End to end, one process**: one warm-up event (connections open, flusher started and
  seen by the sink), then N `track()` calls in a tight loop, then the peer's `flush()`; the
  time is from the first timed `track()` to the sink's answer to the last request. A peer
  that does not deliver everything is waited for until 3 s pass without progress.
- **3. Forked workers**: a driver process makes the client, sends the warm-up event, then
  `os.fork()`s 1, 2, 4 or 8 workers that share N events, run the exit handlers a normal
  interpreter exit would run (as gunicorn workers do) and `os._exit`. The driver then calls
  `flush()`, and again every 0.1 s while it waits as above (see the findings). Events per
  second count delivered events only.
- **4. CPU**: user + system time of the whole process tree except the sink, from the first
  timed `track()` until the sink held the events.
- **5. Memory**: a worker's RSS (`/proc/self/status`) after import, construction, 1,000 calls
  and a flush, minus a bare worker's; the trubrics_mp flusher's peak RSS (VmHWM).
"""

FINDINGS = """## Findings: causes of missed targets and proposed fixes

These were measured on the same machine (microbenchmarks with `timeit`, and
the benchmark re-run against a scratch copy of the package with the change applied).

- **`track()` p50 against the official SDK (about 4x, target 2x) and Segment (about 1/3,
  target 1/5).** trubrics_mp does the JSON encoding and the send in the caller; the
  official SDK only appends a dict to a list. Measured for this event: `encode_event`
  5.0 µs (JSON encoding 3.1 µs, of which the 200-character `$text` is most, the ISO
  timestamp `datetime.now(utc).isoformat()` 1.2 µs, checks 0.7 µs), one `send(2)` on the
  SEQPACKET socket about 2 µs, against 2.1 µs for the whole official call. Proposed
  (`trubrics_mp/_serialize.py` `encode_event`/`encode_llm_event` and `_flusher.py`
  `_add_event`): send `marshal.dumps((user_id, event, properties, time.time()))` as a new
  message kind (0.65 µs measured, against 5.0 µs) and do the JSON encoding and ISO
  formatting in the flusher; fall back to today's JSON path when `marshal` refuses a value
  (`datetime`, `UUID`, `Decimal`, sets) so those conversions stay the same. Expected p50
  about 3.5 µs (1.7x the official SDK's). Caveat: a value JSON cannot hold but marshal
  can (NaN, non-string keys) would then be rejected in the flusher (counted under
  `dropped["unserialisable"]`, no longer reported to the caller). Even then 1/5 of
  Segment's p50 (about 5 µs here) is marginal: the `send(2)` alone costs about 2 µs.
- **One-process throughput against the 50 ms API (about 4x, target 5x).** The flusher has
  `Config.senders = 2` threads, so at most 2 requests are in flight: 2 x 100 events per
  50 ms = 4,000 events/s, which is what is measured. With `senders: int = 4` in
  `trubrics_mp/_config.py` the same benchmark measured 7,500 events/s (8.3x the official
  SDK's 906). Proposed: default 4 senders (the `HTTPAdapter` pool follows `senders`);
  the pause gate already stops all senders while the API fails, so more senders do not
  multiply retries.
- **4 forked workers against 1 process.** The pipeline's total CPU per event is the same
  with 1 or 4 workers (table 4), but 4 busy workers on 2 cores get 4/5 of the CPU and
  the flusher 1/5 (CFS shares CPU per runnable process), so the flusher catches up only
  after the workers stop: the last batch arrives later. Delivery stays complete (no
  drops, no duplicates); only the time to deliver grows. Proposed: less work per event in the
  flusher (`_flusher.py` `_add_event` calls `_held()`, which sums the sizes of all
  unsettled batches for every event: keep a running count instead) and the caller-side
  change above (which frees CPU for the flusher on a 2-core machine).
- **`flush()` of the owner does not cover events other processes already sent.** The
  flusher handles the `F` request as soon as it reads it from the owner's connection;
  events that exited workers left unread in their own connections come after it, and
  their last partial batch then waits `flush_interval` (10 s by default). The benchmark
  therefore calls the owner's `flush()` every 0.1 s while it waits (a master flushing
  periodically). Proposed (`_flusher.py` `_flush_request`): read every other
  connection's pending messages before `cut_all()` (as `_begin_end` does), guarding
  against re-entry from `_read` and skipping connections it closes (not measured: with
  the periodic flush the benchmark's numbers are the same either way).
- **Bursts at start-up.** Before the flusher interpreter has started (about 0.15 s), a
  process can hand over only what fits in its socket buffer (about 200 events of this
  size) plus `process_buffer_size` (1,000): a tight loop of 20,000 `track()` calls right
  after construction dropped 70% (`dropped["buffer_full"]`). The benchmarks therefore
  send one warm-up event first, for every peer. PostHog and Segment drop too beyond their
  default queue of 10,000 events. Worth documenting; a larger default
  `process_buffer_size` (10,000: about 4 MB per process at this event size) would absorb it.
- **p99 of `track()`.** trubrics_mp's p99 (about 100 µs) is several times its p50 and the
  official SDK's p99: each burst wakes the flusher process, which then competes for the two
  cores with the caller and the sink. It stays flat while the API is slow or down (table 6),
  because the caller never waits for the flusher.
"""
