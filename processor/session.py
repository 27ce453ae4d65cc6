"""Kafka behind a small interface: one group member's consumer plus its transactional producer.

The processor sees only ``Session``: ``poll`` a record, ``pause`` / ``resume`` partitions,
``seek_to_committed`` after an abort, and ``commit(records, offsets)`` — the checkpoint, in one
transaction. Every librdkafka error rule lives here and comes out as one of two exceptions:

- ``TransactionAborted``: the transaction was rolled back; nothing of it is visible. The caller
  rewinds to the committed offsets and redoes the work.
- ``FatalKafkaError``: the producer was fenced or hit a fatal error. The worker exits (code 3) and
  the orchestrator restarts it; the new instance's ``init_transactions`` fences this one.

No call here blocks the poll thread longer than ``budget_seconds`` (kept under liveness and
``max.poll.interval.ms``): a broker that does not answer in time aborts the transaction instead.
The transactional calls run on a thread of their own with a deadline, because librdkafka's own
timeouts do not always hold: after a broker restart or a rebalance ``send_offsets_to_transaction``
can block for good (librdkafka 2.16, upstream issues #5456 / #5511; tests/chaos/test_broker_restart.py).
A call that outlives its deadline, an abort that cannot finish, or a fatal producer error that is not
a fencing **replaces the producer in place**: the stuck one is set aside, a new one with the same
``transactional.id`` runs ``init_transactions``, which fences the old one on the broker (its open
transaction is aborted, or finished if its commit had already reached the coordinator). Until then the
session commits nothing and seeks nothing (``seek_to_committed`` reports every partition as not yet
sought, so the processor takes nothing from them): the committed offsets it then reads are final, and
no request is redone that the set-aside producer might still commit. Fenced by another instance of
this worker, or too many replacements in a row: ``FatalKafkaError``.

``tests/support/memory_broker.py`` implements the same interface in memory; one contract suite
(tests/support/session_contract.py, run from tests/unit and tests/integration) runs against both,
so the fake cannot drift from Kafka.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processor import metrics
from processor.config import KafkaSettings
from processor.headers import read_headers
from processor.kafka_io import (
    consumer_config,
    make_consumer,
    make_producer,
    resume_fetching,
    transactional_producer_config,
)

log = logging.getLogger(__name__)

TP = tuple[str, int]

# A paused partition stays in librdkafka's fetch until this much of it is held here
# (``KafkaSession.pause``); it is fetched again once the hold is down to half of it, so that the
# re-fetch has what is left to cover it, even when it waits behind a fetch the broker holds for
# fetch.wait.max.ms (500 ms: 64 jobs of 10 ms cover it).
HOLD_MAX_RECORDS = 128
HOLD_MAX_BYTES = 8 * 1024 * 1024


class TransactionAborted(Exception):
    """The transaction was aborted: none of its records or offsets are visible; rewind and redo."""


class OutcomeRefused(TransactionAborted):
    """The broker (or the client) refused some outcomes for good (too large for the topic, invalid):
    the transaction was aborted, and retrying the same records cannot succeed. ``refused`` maps each
    refused record's index in the batch to why; the caller replaces those outcomes and commits again."""

    def __init__(self, refused: dict[int, str]) -> None:
        super().__init__(f"{len(refused)} outcome(s) refused: {'; '.join(sorted(set(refused.values())))}")
        self.refused = refused


# Early commits (``commit_opened``) remembered until the loop's commit names them.
EARLY_COMMITS_KEPT = 16

# Produce errors that are a property of the record, not of the moment: retrying it cannot succeed.
PERMANENT_PRODUCE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
                                      KafkaError.INVALID_RECORD})


class FatalKafkaError(RuntimeError):
    """The producer was fenced or hit a fatal error: exit so the orchestrator restarts us."""


@dataclass(frozen=True)
class Record:
    """One consumed request record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    # Why ``headers`` is empty although the record had headers (processor.headers), or None.
    headers_problem: str | None = None

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


class OutRecord(Protocol):
    """What ``commit`` produces (an outcome: a result or a dead letter)."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...
    @property
    def headers(self) -> list[tuple[str, bytes]]: ...


# A transaction ``commit_opened`` committed: its records and offsets.
EarlyCommit = tuple[tuple[OutRecord, ...], dict[TP, int]]


class Rebalance(Protocol):
    """Called from inside ``poll`` on the poll thread, like librdkafka's rebalance callbacks."""

    def on_assign(self, tps: list[TP]) -> None: ...
    def on_revoke(self, tps: list[TP]) -> None: ...
    def on_lost(self, tps: list[TP]) -> None: ...


@dataclass(frozen=True)
class Watermarks:
    low: int | None
    high: int | None
    position: int | None  # the next offset the consumer will fetch, if known


class Session(Protocol):
    def start(self, topic: str, listener: Rebalance) -> None:
        """Initialise transactions and subscribe."""

    def poll(self, timeout: float) -> Record | None: ...
    def pause(self, tps: list[TP]) -> None: ...

    def resume(self, tps: list[TP]) -> None:
        """Undo ``pause``. Like librdkafka, a pause is NOT undone by revoke, re-assign or seek."""

    def seek_to_committed(self, tps: list[TP]) -> list[TP]:
        """Move each partition back to its committed offset; returns those it could not (mid-rebalance,
        coordinator unavailable): the caller must take nothing from them until a later try succeeds."""

    def begin(self, offsets: dict[TP, int], records: Sequence[OutRecord] = ()) -> None:
        """Open the transaction now, send these offsets in it and produce these records: the slow part
        of the checkpoint, done while the job's upload still runs. Nothing is visible until
        ``commit``, which must then cover these offsets (or later ones) and name exactly these records
        (the same objects: they are not produced twice); otherwise it aborts this transaction first.
        Raises TransactionAborted / OutcomeRefused / FatalKafkaError like ``commit``."""

    def commit_opened(self, records: Sequence[OutRecord]) -> None:
        """Commit the transaction ``begin`` opened, now, if it holds exactly these records (the same
        objects); otherwise do nothing. Called from the thread that stored the audio the moment it is
        stored, so the result does not wait for the poll loop to notice; it does not wait for the
        broker either (the session's own thread commits, in order after what was asked before it).
        The loop's ``commit`` naming these records then has nothing left to do for them. A commit that
        fails here leaves the transaction open: that ``commit`` meets the failure and handles it."""

    def abort_open(self) -> None:
        """Roll back a transaction opened by ``begin`` (nothing of it was visible); nothing once
        ``commit_opened`` committed it."""

    def commit(self, records: Sequence[OutRecord], offsets: dict[TP, int]) -> None:
        """Produce ``records`` and commit ``offsets`` atomically, or raise TransactionAborted /
        FatalKafkaError."""

    def watermarks(self, tps: list[TP]) -> dict[TP, Watermarks]:
        """What the client already knows (never waits on the broker)."""

    def waiting(self, tps: list[TP]) -> bool:
        """Is anything known to be waiting in these partitions past what ``poll`` handed over? From
        what the client already knows (never waits on the broker); when unsure, yes."""

    def committed(self, tps: list[TP]) -> dict[TP, int | None]:
        """The group's committed offsets (None: nothing committed), asking the broker for at most a
        second; partitions it could not learn are left out."""

    def last_error(self) -> tuple[float, str] | None:
        """The last broker-level error (monotonic time, text), for health."""

    def close(self) -> None:
        """Leave the group."""


def _tps(partitions: list[TopicPartition]) -> list[TP]:
    return [(p.topic, p.partition) for p in partitions]


def _kafka_tps(tps: list[TP]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t, p in tps]


# A producer that says it was fenced has a live twin (same transactional.id): only exiting is safe.
FENCED_ERRORS = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                           KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                           KafkaError.CLUSTER_AUTHORIZATION_FAILED})
# More replacements than this within REPLACEMENT_WINDOW_SECONDS: something is wrong beyond one stuck
# call; exiting (and the orchestrator's back-off) is the honest answer.
MAX_REPLACEMENTS = 3
REPLACEMENT_WINDOW_SECONDS = 600.0


class _Replace(Exception):
    """Raised inside a transactional step: the producer can no longer be trusted; replace it.
    ``reason`` is the metric label: ``abort_timeout`` or ``fatal``."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason


class _CallThread:
    """One daemon thread running one producer's transactional calls in order. A daemon, and not a
    ThreadPoolExecutor, because a call librdkafka never returns from must not hold the process at exit
    (interpreter shutdown joins executor threads)."""

    def __init__(self, name: str) -> None:
        self._q: queue.SimpleQueue[tuple[Future[None], Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, step: Callable[..., None], *args: Any) -> Future[None]:
        future: Future[None] = Future()
        self._q.put((future, step, args))
        return future

    def shutdown(self) -> None:
        self._q.put(None)

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            future, step, args = item
            if future.set_running_or_notify_cancel():
                try:
                    step(*args)
                    future.set_result(None)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, which classifies it
                    future.set_exception(exc)


class _Generation:
    """One transactional producer, its call thread and its open transaction. Steps only ever touch the
    generation they were started with: a set-aside producer's call that returns late cannot reach the
    producer that replaced it."""

    def __init__(self, producer: Producer, number: int) -> None:
        self.producer = producer
        self.number = number
        self.thread = _CallThread(f"kafka-txn-{number}")
        self.open: dict[TP, int] | None = None  # the open transaction's offsets already sent (begin)
        # The records begin() produced into the open transaction, and what the broker refused of them
        # (by index, filled in by their delivery reports).
        self.produced: tuple[OutRecord, ...] = ()
        self.refused: dict[int, str] = {}
        # What commit_opened() committed (records, offsets) and the loop's commit has not named yet; kept
        # until named, so that they are never produced again (a job dropped meanwhile never names its
        # own: only the last few are kept).
        self.committed_early: list[EarlyCommit] = []


class KafkaSession:
    """``Session`` over confluent-kafka: a manual-offset consumer and a transactional producer."""

    def __init__(self, consumer: Consumer, producer: Producer, *, budget_seconds: float = 30.0,
                 park_in_txn_seconds: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 new_producer: Callable[[], Producer] | None = None) -> None:
        self.consumer = consumer
        self.budget = budget_seconds
        self.park_in_txn_seconds = park_in_txn_seconds
        self.clock = clock
        self._listener: Rebalance | None = None
        self._last_error: tuple[float, str] | None = None
        self._last_taken: tuple[str, int, int] | None = None  # the last record poll() returned: its next offset
        # Pausing (see ``pause``): partitions the application paused, those paused in librdkafka too,
        # and what was fetched of them meanwhile, in offset order, with its size.
        self._held: set[TP] = set()
        self._hard: set[TP] = set()
        self._holding: dict[TP, collections.deque[Record]] = {}
        self._holding_bytes: dict[TP, int] = {}
        self._gen = _Generation(producer, 0)
        # Builds a producer with the same configuration (transactional.id): without it, no replacement.
        self._new_producer = new_producer
        self._replacing: threading.Thread | None = None
        self._fatal: str | None = None  # set when a replacement failed: every later call is fatal
        self._replaced_at: list[float] = []
        # Producers set aside (a call of theirs may never return): kept referenced so that no
        # destructor blocks on them; the worker leaves with os._exit when there are any.
        self.set_aside: list[Producer] = []

    @property
    def producer(self) -> Producer:
        return self._gen.producer

    @classmethod
    def connect(cls, k: KafkaSettings, worker_id: str, *, budget_seconds: float = 30.0,
                park_in_txn_seconds: float = 0.0) -> KafkaSession:
        holder: list[KafkaSession] = []

        def on_error(err: KafkaError) -> None:
            log.warning("kafka: %s", err)
            if holder and err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
                holder[0]._last_error = (time.monotonic(), err.str())

        def new_producer() -> Producer:
            return make_producer(transactional_producer_config(k, worker_id, on_error))

        session = cls(make_consumer(consumer_config(k, worker_id, on_error)), new_producer(),
                      budget_seconds=budget_seconds, park_in_txn_seconds=park_in_txn_seconds,
                      new_producer=new_producer)
        holder.append(session)
        return session

    # ------------------------------------------------------------------ consuming

    def start(self, topic: str, listener: Rebalance) -> None:
        self._listener = listener
        self._init_transactions(self.producer)
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def poll(self, timeout: float) -> Record | None:
        if self._fatal is not None:  # a replacement failed: this worker can no longer commit
            raise FatalKafkaError(self._fatal)
        held = self._release()
        if held is not None:
            return held
        deadline = time.monotonic() + timeout
        while True:
            msg: Message | None = self.consumer.poll(timeout)
            if msg is None:
                return None
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise FatalKafkaError(f"consumer: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                    self._last_error = (self.clock(), err.str())
                return None
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            headers, headers_problem = read_headers(msg)  # never msg.headers() directly: see processor.headers
            value = msg.value()
            key = msg.key()
            record = Record(topic, partition, offset, key if isinstance(key, bytes | None) else key.encode(),
                            value if isinstance(value, bytes | None) else value.encode(), headers, headers_problem)
            tp = (topic, partition)
            if tp in self._held or self._holding.get(tp):
                self._hold(record)  # behind what is held of it already: offset order is kept
                held = self._release()
                if held is not None:
                    return held
                # On with what is left of the wait; with none left, until librdkafka has nothing more
                # queued (no more than a hold's worth: a full hold pauses the partition).
                timeout = max(0.0, deadline - time.monotonic())
                continue
            self._last_taken = (topic, partition, offset + 1)
            return record

    def pause(self, tps: list[TP]) -> None:
        """Deliver nothing more of ``tps`` until ``resume``. librdkafka keeps fetching them, and what it
        fetches is held here; only once a partition's hold is full (``HOLD_MAX_RECORDS``) is it paused in
        librdkafka too. A resume is then served from the hold at once. A real pause costs a re-fetch
        after the resume, and that fetch can wait behind one the broker holds for fetch.wait.max.ms for
        the partitions that have nothing new (one fetch per broker at a time): that is what kept the
        wait at 100 ms, ten empty fetches a second on an idle worker, before."""
        self._held.update(tps)

    def resume(self, tps: list[TP]) -> None:
        self._held.difference_update(tps)
        self._refetch([tp for tp in tps if tp in self._hard])

    def _refetch(self, tps: list[TP]) -> None:
        """Resume in librdkafka those of ``tps`` whose hold is down to half."""
        low = [tp for tp in tps if len(self._holding.get(tp, ())) < HOLD_MAX_RECORDS // 2
               and self._holding_bytes.get(tp, 0) < HOLD_MAX_BYTES // 2]
        if low:  # resume_fetching: fetched at once, not at librdkafka's next idle tick (up to 1 s later)
            self._hard.difference_update(low)
            self._quietly("resume", lambda parts: resume_fetching(self.consumer, parts), low)

    def _hold(self, record: Record) -> None:
        tp = record.tp
        self._holding.setdefault(tp, collections.deque()).append(record)
        size = self._holding_bytes[tp] = self._holding_bytes.get(tp, 0) + len(record.value or b"")
        # librdkafka's pause drops what it fetched beyond this; resume_fetching re-fetches from the
        # position, which is right after the last record held here.
        if (tp not in self._hard and (len(self._holding[tp]) >= HOLD_MAX_RECORDS or size >= HOLD_MAX_BYTES)
                and self._quietly("pause", self.consumer.pause, [tp])):
            self._hard.add(tp)

    def _release(self) -> Record | None:
        """The oldest record held of a partition that is no longer paused, if any."""
        for tp, records in self._holding.items():
            if tp not in self._held and records:
                record = records.popleft()
                self._holding_bytes[tp] -= len(record.value or b"")
                if not records:
                    del self._holding[tp], self._holding_bytes[tp]
                self._last_taken = (record.topic, record.partition, record.offset + 1)
                if tp in self._hard:
                    self._refetch([tp])
                return record
        return None

    def _drop_held(self, tps: list[TP]) -> None:
        """Forget what is held of ``tps`` (revoked, lost or rewound: fetched again from elsewhere)."""
        for tp in tps:
            self._holding.pop(tp, None)
            self._holding_bytes.pop(tp, None)

    def _quietly(self, what: str, call: Callable[[list[TopicPartition]], None], tps: list[TP]) -> bool:
        # Mid-rebalance a partition can be on its way out: librdkafka says _STATE or
        # _UNKNOWN_PARTITION. That partition's next owner starts from the committed offset anyway.
        try:
            call(_kafka_tps(tps))
            return True
        except KafkaException as exc:
            log.warning("%s %s failed: %s", what, tps, exc.args[0])
            return False

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._listener is not None
        self._listener.on_assign(_tps(partitions))

    # A pause (``_held``, ``_hard``) outlives a revoke and re-assign, as librdkafka's own does; what was
    # held belongs to the assignment that ends: the next owner, or this one again, starts from the
    # committed offset.
    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._listener is not None
        self._drop_held(_tps(partitions))
        self._listener.on_revoke(_tps(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._listener is not None
        self._drop_held(_tps(partitions))
        self._listener.on_lost(_tps(partitions))

    def seek_to_committed(self, tps: list[TP]) -> list[TP]:
        if not tps:
            return []
        self._drop_held(tps)
        if self.replacing:
            # Until the new producer has fenced the old one, the committed offsets are not final: the
            # set-aside producer's transaction may still commit. Redoing from them could duplicate.
            return list(tps)
        try:
            committed = self.consumer.committed(_kafka_tps(tps), timeout=min(5.0, self.budget))
        except KafkaException as exc:  # e.g. NOT_COORDINATOR right after a broker restart
            log.warning("reading committed offsets failed (%s); will retry", exc.args[0])
            self._last_error = (self.clock(), str(exc.args[0]))
            return list(tps)
        failed: list[TP] = []
        for c in committed:
            offset = c.offset if c.offset >= 0 else OFFSET_BEGINNING  # nothing committed: auto.offset.reset
            try:
                self.consumer.seek(TopicPartition(c.topic, c.partition, offset))
            except KafkaException as exc:
                log.warning("seek %s[%d] to %d failed: %s", c.topic, c.partition, offset, exc.args[0])
                failed.append((c.topic, c.partition))
        return failed

    def watermarks(self, tps: list[TP]) -> dict[TP, Watermarks]:
        out: dict[TP, Watermarks] = {}
        positions: dict[TP, int | None] = {}
        try:
            for p in self.consumer.position(_kafka_tps(tps)):
                positions[(p.topic, p.partition)] = p.offset if p.offset >= 0 else None
        except KafkaException:
            pass
        for tp in tps:
            low: int | None = None
            high: int | None = None
            try:
                lo, hi = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                low, high = (lo if lo >= 0 else None), (hi if hi >= 0 else None)
            except KafkaException:
                pass
            out[tp] = Watermarks(low, high, positions.get(tp))
        return out

    def waiting(self, tps: list[TP]) -> bool:
        # The high watermark of the last fetch response against the position the application reached.
        # A partition nothing was taken from yet has no position: waiting unless it is empty.
        if any(self._holding.get(tp) for tp in tps):
            return True
        last = self._last_taken
        try:
            if last is not None and (last[0], last[1]) in tps:
                # Under load, asked right after a take: more behind that record is the common answer,
                # and it needs no position() call.
                marks = self.consumer.get_watermark_offsets(TopicPartition(last[0], last[1]), cached=True)
                if marks is None or marks[1] < 0 or marks[1] > last[2]:
                    return True
            positions = self.consumer.position(_kafka_tps(tps))
            for p in positions:
                marks = self.consumer.get_watermark_offsets(TopicPartition(p.topic, p.partition), cached=True)
                if marks is None:
                    return True
                lo, hi = marks
                if hi < 0 or hi > (p.offset if p.offset >= 0 else lo):
                    return True
        except KafkaException:
            return True
        return False

    def committed(self, tps: list[TP]) -> dict[TP, int | None]:
        try:
            got = self.consumer.committed(_kafka_tps(tps), timeout=1)
        except KafkaException as exc:
            log.debug("committed offsets unknown: %s", exc.args[0])
            return {}
        return {(c.topic, c.partition): (c.offset if c.offset >= 0 else None) for c in got}

    def last_error(self) -> tuple[float, str] | None:
        return self._last_error

    def close(self) -> None:
        self._gen.thread.shutdown()
        self.consumer.close()

    # ------------------------------------------------------------------ the checkpoint

    def begin(self, offsets: dict[TP, int], records: Sequence[OutRecord] = ()) -> None:
        deadline = self.clock() + self.budget
        self._call(self._begin, deadline + 0.75 * self.budget, offsets, tuple(records), deadline)

    def commit_opened(self, records: Sequence[OutRecord]) -> None:
        if self._fatal is not None or self.replacing:
            return
        gen = self._gen  # a generation replaced meanwhile has no open transaction: a no-op there
        gen.thread.submit(self._commit_opened, gen, tuple(records), self.clock() + self.budget)

    def abort_open(self) -> None:
        if self._gen.open is not None and not self.replacing:
            deadline = self.clock() + self.budget
            self._call(self._abort_open, deadline + 0.75 * self.budget, deadline)

    def commit(self, records: Sequence[OutRecord], offsets: dict[TP, int]) -> None:
        """THE checkpoint: produce the outcomes and send the offsets in one transaction."""
        # All of it committed early already (the usual case for an idle worker's job): nothing to ask
        # the call thread. Read, not changed, from here: the call thread replaces that list whole, and
        # an entry left named is never named again (each outcome commits once); it ages out.
        settled = settle_early(self._gen.committed_early, records, offsets)
        if settled is not None and not settled[1] and not settled[2]:
            return
        deadline = self.clock() + self.budget + self.park_in_txn_seconds
        # The steps keep to ``deadline``; an abort after it gets half a budget more (``_abort``), and
        # librdkafka a quarter for its own overshoot.
        self._call(self._commit, deadline + 0.75 * self.budget, records, offsets, deadline)

    @property
    def replacing(self) -> bool:
        """A new producer is being initialised; nothing commits and nothing is sought until it has."""
        return self._replacing is not None and self._replacing.is_alive()

    def _call(self, step: Callable[..., None], hard_deadline: float, *args: Any) -> None:
        """Run ``step`` on the generation's call thread. A librdkafka call that outlives
        ``hard_deadline`` (it ignored its own timeout) leaves that producer in an unknown state: it is
        replaced, and the transaction counts as aborted."""
        if self._fatal is not None:
            raise FatalKafkaError(self._fatal)
        if self.replacing:
            raise TransactionAborted("the transactional producer is being replaced")
        gen = self._gen
        future = gen.thread.submit(step, gen, *args)
        try:
            future.result(timeout=max(0.1, hard_deadline - self.clock()))
        except FutureTimeout:
            self._replace(gen, "stuck",
                          f"a transactional call outlived its {self.budget:g}s budget (librdkafka #5456/#5511)")
        except _Replace as exc:
            self._replace(gen, exc.reason, str(exc))

    def _replace(self, gen: _Generation, reason: str, why: str) -> NoReturn:
        """Set ``gen``'s producer aside and start a new one with the same transactional.id; the
        caller's transaction counts as aborted (whatever the old producer still does is fenced, or it
        committed before the fencing and the committed offsets read afterwards say so)."""
        now = self.clock()
        self._replaced_at = [t for t in self._replaced_at if now - t < REPLACEMENT_WINDOW_SECONDS]
        if self._new_producer is None or len(self._replaced_at) >= MAX_REPLACEMENTS:
            self._fatal = f"{why}; the producer cannot be replaced again"
            raise FatalKafkaError(self._fatal)
        self._replaced_at.append(now)
        metrics.PRODUCER_REPLACEMENTS.labels(reason).inc()
        log.warning("%s: replacing the transactional producer; nothing is committed or rewound until the "
                    "new one has fenced it", why)
        self._last_error = (now, why)
        gen.thread.shutdown()  # its thread ends after the stuck call, if that ever returns
        self.set_aside.append(gen.producer)
        self._replacing = threading.Thread(target=self._start_replacement, args=(gen.number + 1,),
                                           name="kafka-txn-replace", daemon=True)
        self._replacing.start()
        raise TransactionAborted(f"{why}; producer being replaced")

    def _start_replacement(self, number: int) -> None:
        assert self._new_producer is not None
        try:
            producer = self._new_producer()
            self._init_transactions(producer)  # fences the set-aside producer on the broker
        except (FatalKafkaError, KafkaException) as exc:
            self._fatal = f"replacing the transactional producer failed: {exc}"
            log.error("%s", self._fatal)
            return
        self._gen = _Generation(producer, number)
        log.warning("transactional producer replaced (generation %d); the old one is fenced", number)

    def _init_transactions(self, producer: Producer) -> None:
        # A worker (re)started while the broker is away (a broker restart, a network split) waits
        # for it, rather than exiting into a crash loop: librdkafka says "retry call to resume".
        deadline = self.clock() + 5 * self.budget
        attempt = 0
        while True:
            try:
                producer.init_transactions(min(30.0, self.budget))
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal() or not err.retriable() or self.clock() >= deadline:
                    raise FatalKafkaError(f"init_transactions: {err}") from exc
                log.warning("init_transactions: %s; retrying", err)
                self._last_error = (self.clock(), str(err))
                time.sleep(min(1.0, 0.05 * 2**attempt, max(0.0, deadline - self.clock())))
                attempt += 1

    def _begin(self, gen: _Generation, offsets: dict[TP, int], records: tuple[OutRecord, ...],
               deadline: float) -> None:
        if records and any(r is d for r in records for e in gen.committed_early for d in e[0]):
            return  # committed already (commit_opened): never produced a second time
        try:
            if gen.open is None:
                gen.producer.begin_transaction()
                gen.open = {}
            if records and not gen.produced:
                # Produced first: librdkafka adds their partitions to the transaction (a broker round
                # trip) and sends them while the offsets go out.
                gen.produced, gen.refused = records, {}
                self._produce(gen.producer, records, gen.refused)
            rest = {tp: off for tp, off in offsets.items() if gen.open.get(tp) != off}
            if rest:
                gen.producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, off) for (t, p), off in rest.items()],
                    self.consumer.consumer_group_metadata(), self._left(deadline),
                )
            gen.open.update(offsets)
        except KafkaException as exc:
            self._failed(gen, exc, deadline, gen.refused, served=bool(records))

    @staticmethod
    def _produce(producer: Producer, records: Sequence[OutRecord], refused: dict[int, str]) -> None:
        def on_delivery(index: int) -> Callable[[KafkaError | None, Message], None]:
            def delivered(err: KafkaError | None, msg: Message) -> None:
                if err is not None and err.code() in PERMANENT_PRODUCE_ERRORS:
                    refused[index] = err.str()
            return delivered

        for i, r in enumerate(records):
            try:
                producer.produce(r.topic, r.value, r.key, headers=list(r.headers), on_delivery=on_delivery(i))
            except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
                if exc.args[0].code() in PERMANENT_PRODUCE_ERRORS:
                    refused[i] = exc.args[0].str()
                raise

    def _commit_opened(self, gen: _Generation, records: tuple[OutRecord, ...], deadline: float) -> None:
        if gen.open is None or not _same(gen.produced, records):
            return  # rolled back, or never opened for these: the loop's commit does it all
        try:
            self._commit_transaction(gen, deadline)
        except KafkaException as exc:
            log.debug("early commit failed, left to the loop's commit: %s", exc.args[0])
            return
        gen.committed_early = [*gen.committed_early[-(EARLY_COMMITS_KEPT - 1):], (gen.produced, gen.open)]
        gen.open, gen.produced = None, ()

    def _abort_open(self, gen: _Generation, deadline: float) -> None:
        if gen.open is not None:  # commit_opened() may have committed it meanwhile: then it stays
            self._abort(gen, deadline)

    def _commit(self, gen: _Generation, records: Sequence[OutRecord], offsets: dict[TP, int],
                deadline: float) -> None:
        settled = settle_early(gen.committed_early, records, offsets)
        if settled is None:
            self._commit_all(gen, records, offsets, deadline)
            return
        # commit_opened() committed some of these already: only the rest goes into this transaction.
        gen.committed_early, keep, offsets = settled
        if not keep and not offsets:
            return
        try:
            self._commit_all(gen, [records[i] for i in keep], offsets, deadline)
        except OutcomeRefused as exc:  # indices of the caller's batch, not of the rest
            raise OutcomeRefused({keep[i]: why for i, why in exc.refused.items()}) from exc

    def _commit_all(self, gen: _Generation, records: Sequence[OutRecord], offsets: dict[TP, int],
                    deadline: float) -> None:
        produced = _same(gen.produced, records)
        if gen.open is not None and (any(offsets.get(tp, -1) < off for tp, off in gen.open.items())
                                     or (gen.produced and not produced)):
            # What begin() sent is not exactly what commits here (other offsets, other outcomes): roll
            # it back first, it must never become visible.
            self._abort(gen, deadline)
            produced = False
        refused: dict[int, str] = gen.refused if produced else {}
        producer = gen.producer
        try:
            if gen.open is None:
                producer.begin_transaction()
                gen.open = {}
            if not produced:
                self._produce(producer, records, refused)
            rest = {tp: off for tp, off in offsets.items() if gen.open.get(tp) != off}
            if rest:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, off) for (t, p), off in rest.items()],
                    self.consumer.consumer_group_metadata(), self._left(deadline),
                )
            if self.park_in_txn_seconds > 0:
                # Test-only (TTS_TEST_PARK_IN_TXN_SECONDS): hold the transaction open so a chaos test
                # can kill the worker between send_offsets_to_transaction and commit_transaction.
                log.warning("test hook: parked inside a transaction for %.1fs", self.park_in_txn_seconds)
                time.sleep(self.park_in_txn_seconds)
            self._commit_transaction(gen, deadline)
            gen.open, gen.produced = None, ()
        except KafkaException as exc:
            self._failed(gen, exc, deadline, refused, served=bool(records))
        except BufferError as exc:  # the local produce queue is full: nothing sent is committed
            self._abort(gen, deadline)
            raise TransactionAborted(f"local produce queue full: {exc}") from exc

    def _failed(self, gen: _Generation, exc: KafkaException, deadline: float,
                refused: dict[int, str] | None = None, *, served: bool = False) -> NoReturn:
        err: KafkaError = exc.args[0]
        if err.fatal():
            self._fatal_or_replace(err, "producer fatal")
        self._last_error = (self.clock(), str(err))
        self._abort(gen, deadline)
        if served:
            gen.producer.poll(0)  # serve delivery reports still queued: they say which record failed
        if refused:
            raise OutcomeRefused(refused) from exc
        raise TransactionAborted(str(err)) from exc

    def _fatal_or_replace(self, err: KafkaError, what: str) -> NoReturn:
        if err.code() in FENCED_ERRORS:
            raise FatalKafkaError(f"producer fenced: {err}")  # a twin of this worker is alive: leave
        # Fatal for this producer only (e.g. INVALID_TXN_STATE after a broker restart): a new one
        # with the same transactional.id starts clean.
        raise _Replace("fatal", f"{what}: {err}")

    def _left(self, deadline: float) -> float:
        return max(0.1, deadline - self.clock())

    def _commit_transaction(self, gen: _Generation, deadline: float) -> None:
        attempt = 0
        while True:
            try:
                gen.producer.commit_transaction(self._left(deadline))
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                # Retriable (e.g. a timeout): the same commit may be called again. Past the budget we
                # abort rather than keep the poll loop away from liveness and max.poll.interval.ms.
                if not err.retriable() or err.txn_requires_abort() or self.clock() >= deadline:
                    raise
                time.sleep(min(1.0, 0.05 * 2**attempt, max(0.0, deadline - self.clock())))
                attempt += 1

    def _abort(self, gen: _Generation, deadline: float) -> None:
        gen.open, gen.produced = None, ()
        attempt = 0
        # Aborting needs the broker too; give it a budget of its own so a commit that used up its
        # budget can still be rolled back.
        deadline = max(deadline, self.clock() + self.budget / 2)
        while True:
            try:
                gen.producer.abort_transaction(self._left(deadline))
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal():
                    self._fatal_or_replace(err, "producer fatal during abort")
                if self.clock() >= deadline:
                    # The broker is away longer than the budget: a new producer's init_transactions
                    # settles this transaction whenever the broker is back.
                    raise _Replace("abort_timeout", f"could not abort the transaction in time: {err}") from exc
                time.sleep(min(1.0, 0.05 * 2**attempt, max(0.0, deadline - self.clock())))
                attempt += 1


def settle_early(early: list[EarlyCommit], records: Sequence[OutRecord], offsets: dict[TP, int]
                 ) -> tuple[list[EarlyCommit], list[int], dict[TP, int]] | None:
    """What of a commit ``commit_opened`` did not commit already: the early commits it leaves unnamed,
    the indices of the records left, the offsets left. None when it names none of them."""
    named = [e for e in early if all(any(r is d for r in records) for d in e[0])]
    if not named:
        return None
    done = [d for e in named for d in e[0]]
    keep = [i for i, r in enumerate(records) if not any(r is d for d in done)]
    left = {tp: off for tp, off in offsets.items() if not any(e[1].get(tp) == off for e in named)}
    return [e for e in early if not any(e is n for n in named)], keep, left


def _same(produced: tuple[OutRecord, ...], records: Sequence[OutRecord]) -> bool:
    """Are ``records`` the very ones begin() produced (the same objects, in the same order)?"""
    return bool(produced) and len(produced) == len(records) and all(a is b for a, b in zip(produced, records,
                                                                                            strict=True))
