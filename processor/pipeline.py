"""The processor: one Kafka group member driving one GPU.

    request ─▶ intake (decode/validate) ─▶ prepare (refs) ─▶ synthesize ─▶ finish (render, upload) ─▶ commit

Three seams, each testable on its own:
- ``processor.ledger``: which requests we hold, per partition in offset order, and what may be
  committed (never past a request without an outcome). Plain data, no Kafka.
- ``processor.session``: Kafka behind ``poll`` / ``pause`` / ``resume`` / ``seek_to_committed`` /
  ``commit``; every librdkafka error rule lives there. ``tests/support/memory_broker.py`` is the
  in-memory twin.
- ``processor.stages``: the per-request steps, plain methods that turn anything that goes wrong with
  one request into an error outcome.

This module is the glue: threads, queues and the poll loop (``run_once``, which a test can step).

Threads and who owns what:
- the poll thread owns the ledger and every session call: poll, rebalance callbacks, pause/resume
  and the checkpoint. It never waits on the GPU or on S3, so neither ``max.poll.interval.ms`` nor
  liveness can expire however long a job or a storage outage lasts.
- three stage threads (prepare, GPU, finish) overlap storage I/O with synthesis. They hand outcomes
  back through ``_done``; only the poll thread records them in the ledger.

The checkpoint order (``_commit``): the WAV is uploaded first (deterministic key), then ONE
transaction produces the result/dead-letter events and commits the consumed offsets.

The partition is the GPU lock: revocation, an aborted transaction and a drain drop the affected
entries; a dropped job is abandoned between segments and before upload, and never committed. The
broker fences a zombie's offsets with the group generation as a second line of defence.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from processor import metrics, pacing, tracing
from processor.config import Settings
from processor.engine.base import Engine, Synthesized
from processor.ledger import TP, Ledger
from processor.references import ReferenceCache
from processor.session import FatalKafkaError, OutcomeRefused, Record, Session, TransactionAborted
from processor.stages import Job, Outcome, Stages
from processor.storage import Storage
from processor.voices import VoiceCatalog
from processor.wire import Codec, RegistryUnavailable

__all__ = ["Counters", "FatalKafkaError", "Job", "Outcome", "Processor", "Snapshot"]

log = logging.getLogger(__name__)

Q = TypeVar("Q")
# A transaction opened early (``Session.begin``) for a job whose upload then takes this long (storage
# retries) is rolled back and the job committed the ordinary way: its result, produced into it, holds
# the result partition's last stable offset, so read_committed readers wait behind it until then.
EARLY_TRANSACTION_MAX_SECONDS = 2.0
LAG_REFRESH_SECONDS = 1.0
# A turn that changed nothing health reports refreshes the snapshot at most this often (liveness
# reads its last_tick against limits of seconds); a turn that changed something publishes at once.
SNAPSHOT_SECONDS = 0.1
SEEK_RETRY_SECONDS = 1.0
# A turn's count of what is in flight is reused for its decisions only while it is this fresh.
FLIGHT_STALE_SECONDS = 0.0005
# A registry outage pauses intake this long per attempt (the record is redone, not dead-lettered).
REGISTRY_RETRY_SECONDS = 1.0
# A stage thread waiting for room in the next stage's queue looks this often whether it should stop.
# (An idle one blocks on its own queue without a timeout; stop() wakes it.)
STAGE_WAKE_SECONDS = 0.1


@dataclass
class Counters:
    done: int = 0
    failed: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True)
class Snapshot:
    """What health reads: published by the poll thread, never computed by calling Kafka or S3."""

    last_tick: float
    joined: bool
    lags: tuple[tuple[TP, int | None], ...]
    counters: Counters
    current_request: str | None
    current_started: float | None
    storage_error: tuple[float, str] | None
    broker_error: tuple[float, str] | None
    thread_failure: str | None
    in_flight: int
    # The last moment the worker was making progress: it committed, or it had nothing to do. A worker
    # with work that commits nothing for long (an abort loop, a wedged stage) is not live.
    progress_at: float | None = None


class Processor:
    """One group member: takes requests from ``session``, runs them through ``Stages`` on three
    threads, and commits each outcome with its offset.

    ``run()`` serves until ``request_stop()``, then drains within the grace period and leaves the
    group. Tests drive it without threads of their own: ``start()``, ``run_once()`` as often as they
    like, ``stop()``. Collaborators are passed in (session, storage, reference cache, voice catalog,
    clock), so a test can hand it small ones.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        storage: Storage,
        session: Session,
        events_producer: Any,
        codecs: dict[str, Codec],
        *,
        references: ReferenceCache | None = None,
        voices: VoiceCatalog | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_commit: Callable[[list[Job]], None] | None = None,
    ) -> None:
        self.s = settings
        self.worker_id = settings.worker.id
        self.engine = engine
        self.session = session
        self.events_producer = events_producer
        self.codecs = codecs
        self.clock = clock
        self.on_commit = on_commit
        self.voices = voices or VoiceCatalog(storage, settings.s3.bucket, settings.s3.voices_prefix)
        self.stages = Stages(settings, engine, storage, references or ReferenceCache(storage, settings.s3),
                             self.voices, codecs, events_producer, clock=clock)

        # Owned by the poll thread.
        self.ledger: Ledger[Job] = Ledger()
        self.counters = Counters()
        self.joined = False
        self.last_tick = clock()
        self._progress_at = clock()
        # Set by an aborted transaction until the next commit (or assignment change): the ledger is
        # empty right after a rewind, but that is not "nothing to do".
        self._redoing = False
        # Outcomes that stand in for ones the broker refused for good, by (partition, offset).
        self._stand_ins: dict[tuple[TP, int], Outcome] = {}
        self.assignment_changed = threading.Event()
        self._last_delivery: dict[TP, float] = {}
        self._lags: dict[TP, int | None] = {}
        self._lags_view: tuple[tuple[TP, int | None], ...] = ()  # what the snapshot shows, sorted once
        self._in_flight_shown = -1  # the in-flight gauge's value: set only when it changes
        self._known_committed: dict[TP, tuple[int | None, int | None]] = {}  # partition -> (epoch, offset)
        self._lags_at = float("-inf")
        self._seek_at = float("-inf")
        self._grace_deadline: float | None = None
        self.snapshot = self._make_snapshot()

        # Stage queues; a None wakes the thread blocked on it (``_halt_stages``).
        self._prepare_q: queue.Queue[Job | None] = queue.Queue()
        self._gpu_q: queue.Queue[Job | None] = queue.Queue(maxsize=1)
        self._finish_q: queue.Queue[tuple[Job, Synthesized] | None] = queue.Queue(maxsize=1)
        self._done: queue.Queue[tuple[Job, Outcome]] = queue.Queue()
        self._stop = threading.Event()  # asked to stop: drain
        self._halt = threading.Event()  # stage threads: exit now
        self._threads: list[threading.Thread] = []
        self.stage_wake_seconds = STAGE_WAKE_SECONDS
        self.thread_failure: str | None = None
        self._fatal = False
        self.current: Job | None = None  # the job on the GPU, for health
        self.gpu_started = 0.0  # when ``current`` went on the GPU (self.clock)
        self.job_length = pacing.JobLength()  # written by the GPU thread, read by the poll thread
        self.finish_length = pacing.JobLength()  # encode + upload seconds; written by the finish thread
        self.build_length = pacing.JobLength()  # GPU end to result built (encode); the finish thread's too
        self.job_seconds = pacing.JobLength()  # synthesis seconds per request, whatever the text
        # Owned by the poll thread: when the oldest uncommitted outcome became ready; whether the last
        # poll returned a record (more may be queued right behind it); the job whose offsets an early
        # transaction already holds (Session.begin), and since when.
        self._ready_since: float | None = None
        self._took_record = False
        self._early: Job | None = None
        self._early_at = 0.0
        # The job the poll thread put on the GPU queue itself (``_take``): on the GPU as far as the
        # loop's timing is concerned, also in the moment before the GPU thread takes it.
        self._handed: Job | None = None
        # An idle worker's job is finishing and its result is not built yet: the loop looks again soon,
        # to put it in a transaction while the upload runs.
        self._early_wanted = False
        self._changed = True  # this turn changed what the snapshot shows
        self._published_at = float("-inf")
        # This turn's view of what is in flight (``_in_flight``): counted once after the turn's intake
        # and collection, not once per decision (it was ~18 % of the poll thread's CPU).
        self._flight: pacing.InFlight | None = None
        self._flight_at = 0.0

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, *, on_tick: Callable[[], None] | None = None) -> None:
        """Serve until ``request_stop``; then drain within the grace period and leave the group."""
        self.start()
        try:
            while self.run_once():
                if on_tick is not None:
                    on_tick()
        finally:
            self.stop()

    def start(self) -> None:
        for name, target in (("prepare", self._prepare_loop), ("gpu", self._gpu_loop),
                             ("finish", self._finish_loop)):
            t = threading.Thread(target=self._guarded, args=(name, target), name=f"tts-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self.session.start(self.s.kafka.request_topic, self)

    def run_once(self) -> bool:
        """One turn of the poll loop. False once a requested stop has drained (or the grace ran out)."""
        if self._stop.is_set() and self._grace_deadline is None:
            self._grace_deadline = self.clock() + self.s.worker.shutdown_grace_seconds
            log.info("draining: taking no new work, finishing the current job")
            self.ledger.drain()
            self._flight = None
        if self._grace_deadline is not None and (not self.ledger.busy() or self.clock() >= self._grace_deadline):
            return False
        record = self.session.poll(self._poll_timeout())
        self._flight = None
        self.last_tick = self.clock()
        self._took_record = record is not None
        self._changed |= self._took_record  # still set when the last turn ended early (a take)
        if record is not None and self._take(record):
            # Handed to the prepare thread, which needs the GIL now: the rest of this turn (outcomes,
            # commits, health) waits for the next one, a short poll away while a prepare step runs.
            # Flow control can't wait: it bounds how many takes come in a row.
            self._flow_control()
            return True
        self._collect_done()
        self._retry_seeks()
        self._commit_ready(force=self._grace_deadline is not None)
        self._begin_early()
        if not self.ledger.busy() and not self._redoing:
            self._progress_at = self.last_tick
        self._flow_control()
        self._publish(changed=self._changed)
        self._changed = False
        return True

    def stop(self) -> None:
        """Commit what is finished, abandon the rest, stop and join the threads, leave the group."""
        # After a fatal error the producer is fenced or broken: nothing more is committed.
        with contextlib.suppress(FatalKafkaError, TransactionAborted):
            if not self._fatal:
                self._collect_done()
                self._commit_ready(force=True)
                self._drop_early()
        self.ledger.revoke(list(self.ledger.epochs))  # anything still running is abandoned, never committed
        self._halt_stages()
        deadline = time.monotonic() + 5
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():  # stuck in a storage call or a segment: a daemon, it ends with the process
                log.warning("thread %s did not stop within 5 s", t.name)
        self._threads.clear()
        self.session.close()  # leaves the group; on_revoke commits nothing new (all committed)
        self.events_producer.flush(5)
        self._publish()
        log.info("stopped: done=%d failed=%d dead_lettered=%d", self.counters.done, self.counters.failed,
                 self.counters.dead_lettered)

    # ------------------------------------------------------------------ intake (poll thread)

    def _take(self, record: Record) -> bool:
        """Take a delivered record; True when it went to the prepare thread."""
        job = Job(tp=record.tp, offset=record.offset, key=record.key, received=self.clock())
        if not self.ledger.accept(job):
            return False  # not ours, draining, rewinding, or a re-delivery after pause/resume
        job.marks["polled"] = time.perf_counter()
        self._last_delivery[job.tp] = self.clock()
        stand_in = self._stand_ins.get((job.tp, job.offset))
        if stand_in is not None:  # its own outcome was refused for good before: not worth redoing
            job.fallback_used = True
            self.ledger.complete(job, stand_in)
            return False
        try:
            outcome = self.stages.intake(job, record)
        except RegistryUnavailable as exc:
            # The record may be fine; only its writer schema is out of reach. Redo from the committed
            # position after a pause instead of dead-lettering it (the health snapshot says why).
            log.warning("%s; rewinding to the committed offsets", exc)
            self._rewind()
            time.sleep(REGISTRY_RETRY_SECONDS)
            return False
        if outcome is not None:
            self.ledger.complete(job, outcome)
            return False
        if self._next_for_gpu(job) and job.advance("preparing"):
            with tracing.stage(job.trace, "prepare"):
                ready = self.stages.prepare_cached(job)
            if ready:
                # Its clips are cached: straight to the GPU queue, without a hop through the prepare
                # thread and a poll turn to notice it is prepared (~0.6 ms of CPU a request). To an idle
                # GPU it counts as on the GPU at once; a busy one takes it when it is done.
                if self.current is None:
                    self._handed = job
                try:
                    self._gpu_q.put_nowait(job)
                    return True
                except queue.Full:  # cannot happen while only the poll and prepare threads feed it
                    self._handed = None
        self._prepare_q.put(job)
        return True

    def _next_for_gpu(self, job: Job) -> bool:
        """Nothing else waits for the GPU: ``job`` may skip the prepare thread without overtaking."""
        if not self._gpu_q.empty():
            return False
        return all(j is job or j.state not in ("queued", "preparing")
                   for entries in self.ledger.entries.values() for j in entries)

    def _collect_done(self) -> None:
        if not self._done.queue:  # most turns: nothing finished (an unlocked look; a miss waits one turn)
            return
        self._flight = None
        while True:
            try:
                job, outcome = self._done.get_nowait()
            except queue.Empty:
                return
            self._changed = True
            self.ledger.complete(job, outcome)

    # ------------------------------------------------------------------ stage threads

    def _guarded(self, name: str, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:  # the steps catch per-job errors: this is a bug in the glue
            self.thread_failure = f"{name} thread died: {type(exc).__name__}: {exc}"
            log.exception("%s thread died", name)
            raise

    def _items(self, q: queue.Queue[Q | None]) -> Iterator[Q]:
        # Blocks without a timeout: a timed wait wakes the thread ten times a second for nothing, and
        # every wake-up costs CPU (~50 us here), idle or not. ``_halt_stages`` wakes it to stop.
        while not self._halt.is_set():
            item = q.get()
            if item is not None:
                yield item

    def _halt_stages(self) -> None:
        """Stage threads exit: now if idle, else after the item in hand (dropped jobs end at once)."""
        self._halt.set()
        for q in (self._prepare_q, self._gpu_q, self._finish_q):
            # A full queue needs no wake-up: its thread is busy, or about to take the item and see the halt.
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)

    def _hand_on(self, q: queue.Queue[Q | None], item: Q) -> None:
        while not self._halt.is_set():
            try:
                q.put(item, timeout=self.stage_wake_seconds)
                return
            except queue.Full:
                continue

    def _prepare_loop(self) -> None:
        for job in self._items(self._prepare_q):
            if not job.advance("preparing"):
                continue  # dropped while queued
            with tracing.stage(job.trace, "prepare") as span:
                outcome = self.stages.prepare(job)
                tracing.outcome(span, outcome)
            if outcome is not None:
                self._done.put((job, outcome))
            else:
                self._hand_on(self._gpu_q, job)

    def _gpu_loop(self) -> None:
        for job in self._items(self._gpu_q):
            if not job.advance("synthesizing"):
                continue  # dropped (revoked, aborted, draining) before it reached the GPU
            self.gpu_started = self.clock()
            self.current = job
            try:
                with tracing.stage(job.trace, "synthesize") as span:
                    result = self.stages.synthesize(job)
                    tracing.outcome(span, result if isinstance(result, Outcome) else None)
            finally:
                self.current = None
            if isinstance(result, Outcome):
                self._done.put((job, result))
            elif result is not None:
                self.job_length.observe(job.stage_seconds["synthesis"], len(job.request.text) if job.request else 1)
                self.job_seconds.observe(job.stage_seconds["synthesis"], 1)
                self._hand_on(self._finish_q, (job, result))

    def _finish_loop(self) -> None:
        for job, synth in self._items(self._finish_q):
            if not job.advance("finishing"):
                continue
            with tracing.stage(job.trace, "store") as span:
                outcome = self.stages.finish(job, synth, built=functools.partial(self._built, job))
                tracing.outcome(span, outcome)
            if outcome is not None and outcome is job.provisional and job.early_opened:
                # Stored: if the loop opened a transaction with this very result in it (an idle worker,
                # ``_begin_early``), it commits now, not when the loop next wakes (up to a short poll
                # later, and its turn's work after that). The session ignores it otherwise.
                self.session.commit_opened([outcome])
            if "finish_start" in job.marks:
                self.finish_length.observe(time.perf_counter() - job.marks["finish_start"], 1)
            if outcome is not None:
                self._done.put((job, outcome))

    def _built(self, job: Job, outcome: Outcome) -> None:
        """The finish thread built the job's result; its upload starts now (``_begin_early``)."""
        job.provisional = outcome
        if "engine_end" in job.marks:
            self.build_length.observe(time.perf_counter() - job.marks["engine_end"], 1)

    # ------------------------------------------------------------------ the checkpoint

    def _commit_ready(self, *, force: bool = False) -> None:
        ready = self.ledger.committable(self.s.worker.max_batch)
        if not ready:
            self._ready_since = None
            return
        now = self.clock()
        if self._ready_since is None:
            self._ready_since = now
        more = self._took_record or self._outcome_due(self._in_flight(), more_than=0)
        if pacing.commit_now(len(ready), max_batch=self.s.worker.max_batch, waited=now - self._ready_since,
                             more_coming=more, force=force):
            self._ready_since = None
            self._commit(ready)

    def _begin_early(self) -> None:
        """Open the transaction while a job uploads: begin, produce its result (built before the upload:
        every key is content-addressed) and send its offset. librdkafka's round trips for these
        (AddPartitionsToTxn, Produce, AddOffsetsToTxn, TxnOffsetCommit) overlap the upload, and the
        finish thread ends the transaction (EndTxn) the moment the audio is stored
        (``Session.commit_opened``); the loop's own commit of that result later has nothing to do.
        Only for the oldest uncommitted job of its partition, one at a time; nothing of it is visible
        before the commit, and ``Session.commit`` rolls it back if the commit does not name the same
        offsets and result (an upload that failed commits an error outcome instead).

        Only while nothing else is in flight (an idle worker, where the result's latency is what a
        caller waits for): with a job on the GPU or waiting for it, the commit's latency costs the GPU
        nothing, and one transactional call per result instead of two saves the worker CPU."""
        self._early_wanted = False
        early = self._early
        if early is not None:
            if early.state == "dropped" or self.clock() - self._early_at > EARLY_TRANSACTION_MAX_SECONDS:
                self._drop_early()  # not opened again for it (``Job.early_opened``): it commits the ordinary way
            return
        if self._grace_deadline is not None:
            return
        f = self._in_flight()
        if f.on_gpu or f.ahead or self._outcome_due(f, more_than=1):
            return  # busy (or outcomes follow each other closely and share one transaction)
        for entries in self.ledger.entries.values():
            # Only the partition's oldest uncommitted job: the transaction commits its offset as soon
            # as its audio is stored (``commit_opened``), so nothing before it may still be uncommitted.
            job = entries[0] if entries else None
            if job is None or job.state != "finishing" or job.early_opened:
                continue
            if job.provisional is None:
                self._early_wanted = True  # its result is being built (encode): look again in a moment
                continue
            self._early, self._early_at = job, self.clock()
            job.early_opened = True
            try:
                self.session.begin({job.tp: job.offset + 1}, [job.provisional])
            except OutcomeRefused:
                self._early = None  # rolled back; its commit produces it again and replaces what is refused
            except TransactionAborted as exc:
                self._early = None
                metrics.TRANSACTIONS.labels("aborted").inc()
                log.warning("transaction aborted (%s); rewinding to the committed offsets", exc)
                self._rewind()
            return

    def _outcome_due(self, f: pacing.InFlight, *, more_than: int) -> bool:
        """Are more than ``more_than`` outcomes about to be ready (within the batch window)? Uploads
        under way are; so is the job on the GPU when it is due to end and be stored within the window."""
        due = f.finishing
        remaining, store = f.gpu_remaining, self.finish_length.expected(1)
        if remaining is not None and store is not None and remaining + store < pacing.BATCH_WINDOW_SECONDS:
            due += 1
        return due > more_than

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early = None
            with contextlib.suppress(TransactionAborted):
                self.session.abort_open()

    def _commit(self, jobs: list[Job]) -> None:
        """Audio is already stored; results + offsets now commit atomically, or not at all."""
        offsets = {j.tp: j.offset + 1 for j in jobs}
        outcomes = [j.outcome for j in jobs]
        assert all(isinstance(o, Outcome) for o in outcomes)
        t0 = time.perf_counter()
        self._changed = True
        self._early = None  # this commit ends (or first rolls back) any transaction opened early
        try:
            with contextlib.ExitStack() as emitting:
                for job in jobs:
                    emitting.enter_context(tracing.stage(job.trace, "emit", batch=len(jobs)))
                self.session.commit([o for o in outcomes if isinstance(o, Outcome)], offsets)
        except OutcomeRefused as exc:
            metrics.TRANSACTIONS.labels("aborted").inc()
            if self._replace_refused(jobs, exc.refused):
                return  # the same jobs commit again with the stand-ins, nothing is redone
            log.warning("transaction aborted (%s); rewinding to the committed offsets", exc)
            self._rewind()
            return
        except TransactionAborted as exc:
            metrics.TRANSACTIONS.labels("aborted").inc()
            log.warning("transaction aborted (%s); rewinding to the committed offsets", exc)
            self._rewind()
            return
        except FatalKafkaError:
            metrics.TRANSACTIONS.labels("fatal").inc()
            self._fatal = True
            raise
        metrics.TRANSACTIONS.labels("committed").inc()
        self._progress_at = self.clock()
        self._redoing = False
        t1 = time.perf_counter()
        metrics.STAGE_SECONDS.labels("commit").observe(t1 - t0)
        self.ledger.committed_ok(jobs)
        for job in jobs:
            self._stand_ins.pop((job.tp, job.offset), None)
        for job in jobs:
            o = job.outcome
            assert isinstance(o, Outcome)
            metrics.REQUESTS.labels(*o.metric_labels).inc()
            tracing.end_job(job.trace, o.status, o.error_code)
            if o.status == "success":
                self.counters.done += 1
            elif o.status == "error":
                self.counters.failed += 1
            else:
                self.counters.dead_lettered += 1
                metrics.DEAD_LETTERS.inc()
            job.marks["committed"] = t1
            job.stage_seconds["commit"] = t1 - t0
        if self.on_commit is not None:
            self.on_commit(jobs)

    def _replace_refused(self, jobs: list[Job], refused: dict[int, str]) -> bool:
        """Put a small stand-in in place of each outcome the broker refused for good. False when a
        stand-in itself was refused: then nothing smaller exists, and the batch is redone instead.

        The broker refuses a produce batch as a whole (its size against the topic's
        max.message.bytes), so outcomes sent together are refused together even when one alone is
        too large. Of several refused at once only the largest is replaced; the others go again
        with its stand-in, and one still refused alone is replaced then."""
        if len(refused) > 1:
            largest = max(refused, key=lambda i: len(getattr(jobs[i].outcome, "value", b"")))
            refused = {largest: refused[largest]}
        for index, why in refused.items():
            job = jobs[index]
            if job.fallback_used:
                return False
            assert isinstance(job.outcome, Outcome)
            job.outcome = self.stages.fallback(job, job.outcome, why)
            job.fallback_used = True
            # Kept until committed: after a refusal librdkafka may fail the next transaction too
            # (OUT_OF_ORDER_SEQUENCE_NUMBER until its epoch bump), and the redo must not refuse again.
            self._stand_ins[(job.tp, job.offset)] = job.outcome
        return True

    def _rewind(self) -> None:
        """Everything taken since the last commit is redone from the committed position."""
        self._redoing = True
        self._flight = None
        self._changed = True
        tps = self.ledger.rewind()
        # The ledger forgot its pauses with everything else: the consumer must not keep them (with
        # nothing in flight, nothing would ever resume those partitions).
        self.session.resume(tps)
        self.ledger.hold(self.session.seek_to_committed(tps))
        self._seek_at = self.clock()

    def _retry_seeks(self) -> None:
        if self.ledger.held and self.clock() - self._seek_at >= SEEK_RETRY_SECONDS:
            self._seek_at = self.clock()
            self.ledger.hold(self.session.seek_to_committed(sorted(self.ledger.held)))

    # ------------------------------------------------------------------ flow control and rebalances

    def _flow_control(self) -> None:
        decision = self.ledger.flow(self.intake_limit(), lambda: self.session.waiting(list(self.ledger.epochs)))
        self.session.pause(decision.pause)
        self.session.resume(decision.resume)

    def intake_limit(self) -> int:
        """Pause intake above this many in flight: WORKER_PREFETCH requests ahead of the GPU, taken just
        in time (``processor.pacing``)."""
        return pacing.intake_limit(self._in_flight(), self.s.worker.prefetch)

    def _in_flight(self) -> pacing.InFlight:
        f = self._flight
        now = time.perf_counter()
        # Counted again after a blocking call (a commit or begin takes milliseconds): its times (the
        # job's elapsed time on the GPU, an upload's remaining time) would be that much stale.
        if f is None or now - self._flight_at > FLIGHT_STALE_SECONDS:
            f, self._flight_at = self._count_in_flight(), now
            self._flight = f
        return f

    def _count_in_flight(self) -> pacing.InFlight:
        ahead = preparing = synthesizing = finishing = 0
        finish_remaining: float | None = float("inf")
        expected_finish = self.finish_length.expected(1)
        now = time.perf_counter()  # the finish step marks its start on this clock
        current = self.current
        handed = self._handed
        if handed is not None and (handed.state != "preparing" or current is not None):
            handed = self._handed = None  # the GPU thread has it (or it was dropped)
        for entries in self.ledger.entries.values():
            for j in entries:
                if j is handed:
                    continue
                if j.state in ("queued", "preparing"):
                    ahead += 1
                    preparing += "prepared" not in j.marks
                elif j.state == "synthesizing":
                    synthesizing += 1
                elif j.state == "finishing":
                    finishing += 1
                    started = j.marks.get("finish_start")
                    if finish_remaining is not None:
                        finish_remaining = (None if started is None or expected_finish is None
                                            else min(finish_remaining, expected_finish - (now - started)))
        on_gpu = current is not None and current.state == "synthesizing"
        gpu_elapsed = self.clock() - self.gpu_started
        if handed is not None and not on_gpu:
            current, on_gpu, gpu_elapsed = handed, True, 0.0
        # Synthesized but not yet taken by the finish thread: as good as finishing, and due now.
        if synthesizing > int(on_gpu):
            finishing += synthesizing - int(on_gpu)
            finish_remaining = None
        expected = None
        if on_gpu and current is not None and current.request is not None:
            expected = self.job_length.expected(len(current.request.text))
        return pacing.InFlight(ahead=ahead, preparing=preparing, on_gpu=on_gpu, finishing=finishing,
                               gpu_elapsed=gpu_elapsed, gpu_expected=expected,
                               finish_remaining=finish_remaining if finishing else None,
                               typical_job=self.job_seconds.expected(1), finish_expected=expected_finish,
                               build_expected=self.build_length.expected(1))

    def _poll_timeout(self) -> float:
        if self._early_wanted:
            return pacing.SHORT_POLL_SECONDS
        # The count this turn's decisions used (stage threads may have moved on since: at worst a short
        # poll too many), counted afresh only when nothing counted it this turn.
        wait = pacing.poll_timeout(self._in_flight(), prefetch=self.s.worker.prefetch,
                                   outcomes_waiting=bool(self.ledger.committable(1)),
                                   intake_paused=bool(self.ledger.paused))
        # Liveness fails when the loop has not ticked for WORKER_LIVENESS_STALL_SECONDS: however short
        # that is set, an idle loop ticks four times within it.
        return min(wait, self.s.worker.liveness_stall_seconds / 4)

    # librdkafka keeps an application pause on a partition across revoke and re-assign; only resume()
    # clears it (seek does not). So every assignment change resumes the partitions it touches: a pause
    # never outlives the assignment it was made for, and the ledger's pause set starts empty.
    def on_assign(self, tps: list[TP]) -> None:
        metrics.REBALANCES.labels("assign").inc()
        self._redoing = False
        self._flight = None
        self.session.resume(tps)
        self.ledger.assign(tps)
        for tp in tps:
            self._last_delivery[tp] = self.clock()
        self.joined = True
        self._lags_at = float("-inf")
        self._changed = True
        self.assignment_changed.set()
        log.info("assigned %s", sorted(f"{t}[{p}]" for t, p in tps))

    def on_revoke(self, tps: list[TP]) -> None:
        metrics.REBALANCES.labels("revoke").inc()
        self._redoing = False
        # We still own these partitions inside the callback: commit what is finished, drop the rest.
        self._collect_done()
        self._commit_ready(force=True)
        self._forget(tps)
        log.info("revoked %s", sorted(f"{t}[{p}]" for t, p in tps))

    def on_lost(self, tps: list[TP]) -> None:
        metrics.REBALANCES.labels("lost").inc()
        self._redoing = False
        # Someone else may own them already: commit nothing.
        self._forget(tps)
        log.warning("lost %s", sorted(f"{t}[{p}]" for t, p in tps))

    def _forget(self, tps: list[TP]) -> None:
        self._flight = None
        if self._early is not None and self._early.tp in tps:
            self._drop_early()  # its partition is going: what begin() sent must never commit
        self.session.resume(tps)
        self.ledger.revoke(tps)
        self._stand_ins = {k: v for k, v in self._stand_ins.items() if k[0] not in tps}
        for tp in tps:
            self._last_delivery.pop(tp, None)
            self._lags.pop(tp, None)
            self._known_committed.pop(tp, None)
            with contextlib.suppress(KeyError):
                metrics.QUEUE_LAG.remove(tp[0], str(tp[1]))
        self._lags_view = tuple(sorted(self._lags.items()))
        self._changed = True
        self.assignment_changed.set()

    def unstick(self, stall_seconds: float) -> list[TP]:
        """Resume partitions that have lag but delivered nothing for ``stall_seconds`` while holding no
        work and not paused by us. Rebalances already resume (a pause must not outlive an assignment);
        this is the counted safety net, logged loudly so it is visible if it ever fires."""
        now = self.clock()
        stuck = [tp for tp, lag in self._lags.items()
                 if lag and tp not in self.ledger.paused and not self.ledger.entries.get(tp)
                 and not self.ledger.draining and now - self._last_delivery.get(tp, now) >= stall_seconds]
        for tp in stuck:
            log.warning("partition %s[%d] has lag %s but delivered nothing for %.0fs: resuming it",
                        tp[0], tp[1], self._lags[tp], now - self._last_delivery.get(tp, now))
            self._last_delivery[tp] = now
            metrics.REBALANCES.labels("resync").inc()
        self.session.resume(stuck)
        return stuck

    # ------------------------------------------------------------------ what health reads

    def _publish(self, *, changed: bool = True) -> None:
        now = self.clock()
        if now - self._lags_at >= LAG_REFRESH_SECONDS:
            self._lags_at = now
            self._refresh_lags()
            self.unstick(max(30.0, 3 * self.s.worker.health_interval_seconds))
            changed = True
        # Building the snapshot is a good part of a short turn's CPU; most short turns change nothing.
        # What other threads change (a stage thread died, the GPU took a job) shows at once as well.
        snap, current = self.snapshot, self.current
        changed = (changed or now - self._published_at >= SNAPSHOT_SECONDS
                   or snap.thread_failure != self.thread_failure
                   or snap.current_request != (current.request_id if current is not None else None))
        if changed:
            self._published_at = now
            self.snapshot = self._make_snapshot()

    def _refresh_lags(self) -> None:
        tps = list(self.ledger.epochs)
        marks = self.session.watermarks(tps) if tps else {}
        # Asked once per assignment, only for partitions where nothing local says where we stand.
        ask = [tp for tp in tps if self._known_committed.get(tp, (None,))[0] != self.ledger.epochs[tp]]
        if ask:
            for tp, off in self.session.committed(ask).items():
                self._known_committed[tp] = (self.ledger.epochs.get(tp), off)
        lags: dict[TP, int | None] = {}
        for tp in tps:
            w = marks.get(tp)
            if w is None or w.high is None:
                lags[tp] = None
                continue
            # The first request not committed yet: our own last commit, else the oldest request we hold,
            # else where the consumer fetches next, else the group's committed offset (nothing committed:
            # the log start, as auto.offset.reset=earliest).
            entries = self.ledger.entries.get(tp)
            start = self.ledger.committed.get(tp)
            if start is None and entries:
                start = entries[0].offset
            if start is None:
                start = w.position
            if start is None and tp in self._known_committed:
                epoch, off = self._known_committed[tp]
                if epoch == self.ledger.epochs[tp]:
                    start = off if off is not None else w.low
            lag = max(0, w.high - start) if start is not None else None
            if lag is not None:
                metrics.QUEUE_LAG.labels(tp[0], str(tp[1])).set(lag)
            lags[tp] = lag
        self._lags = lags
        self._lags_view = tuple(sorted(lags.items()))

    def _make_snapshot(self) -> Snapshot:
        current = getattr(self, "current", None)
        in_flight = self.ledger.in_flight()
        if in_flight != self._in_flight_shown:
            self._in_flight_shown = in_flight
            metrics.INFLIGHT_JOBS.set(in_flight)
        metrics.INFLIGHT_AGE.set(self.clock() - current.started if current is not None else 0.0)
        return Snapshot(
            last_tick=self.last_tick, joined=self.joined, lags=self._lags_view,
            counters=Counters(**vars(self.counters)),
            current_request=current.request_id if current is not None else None,
            current_started=current.started if current is not None else None,
            storage_error=self.stages.storage_error, broker_error=self.session.last_error(),
            thread_failure=getattr(self, "thread_failure", None), in_flight=in_flight,
            progress_at=self._progress_at,
        )
