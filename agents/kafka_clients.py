"""Every Kafka client ipanon makes, built in one place, and the one routine that sends a batch.

``Clients(bootstrap, security)`` — or ``Clients.of(settings)`` for a worker's ``Settings`` —
builds each kind with the project's defaults (below) and the connection's security
(``agents.security``: TLS, SASL/SCRAM, mutual TLS), so no client anywhere can forget them:

- ``aio_consumer`` / ``aio_producer`` — aiokafka, for the worker's own loops (batch stages,
  the table's restore, the query desk's and the lookups' tails);
- ``consumer`` / ``producer`` / ``admin`` — kafka-python, for the CLI, the synchronous helpers
  (``agents.kafka_io``), topic administration and the canaries' scans (run in a thread);
- Faust builds its own clients from the app's configuration: ``faust_credentials``
  (``agents.security``) is its security.

Every keyword argument a caller passes overrides the default of the same name.  ``None`` as
security means the process's (``agents.security.current()``, from the environment).

``send_all`` is the one ack-flush routine: it hands a batch of outputs to a producer in order
(queued, no ack wait per record), then awaits every acknowledgement together, and either
raises the first failure or, with ``retry_pause_s``, sends the whole batch again after a pause
until the broker takes it (what a stage that commits its input only after its outputs needs;
re-sent duplicates must be harmless to the caller).  ``aio_send`` adapts an aiokafka producer
to it, ``faust_send`` a Faust topic.

The client library is aiokafka (kafka-python where a caller is synchronous); how it compares
with confluent-kafka (librdkafka) is measured in docs/benchmarks.md, "Kafka client choice".
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Sequence

from .security import KafkaSecurity, aiokafka_kwargs, kafka_python_kwargs

#: aiokafka producers: every write acknowledged by all in-sync replicas; a short linger so
#: a batch's records share requests; 256 KiB per partition batch
AIO_PRODUCER: dict[str, Any] = {"acks": "all", "linger_ms": 5, "max_batch_size": 256 * 1024}
#: aiokafka consumers: offsets are committed by the code, after its outputs are acknowledged
AIO_CONSUMER: dict[str, Any] = {"enable_auto_commit": False}
#: kafka-python producers (tools that send a file's worth): acks=all, one request in flight
#: per connection with retries, so a retried batch never overtakes the next (order per key)
SYNC_PRODUCER: dict[str, Any] = {"acks": "all", "linger_ms": 20, "batch_size": 256 * 1024, "compression_type": None,
                                 "max_in_flight_requests_per_connection": 1, "retries": 10}
#: long-running senders of operators' logs (``ipanon collect``, ``ipanon produce``): keep
#: retrying through a broker's restart until ``delivery_timeout_ms`` rather than drop records;
#: kafka-python's idempotent producer keeps their order with several requests in flight
BULK_PRODUCER: dict[str, Any] = {"retries": float("inf"), "max_in_flight_requests_per_connection": 5}
#: kafka-python consumers: no group unless asked for, never an automatic commit
SYNC_CONSUMER: dict[str, Any] = {"group_id": None, "enable_auto_commit": False}
#: kafka-python admin clients
ADMIN: dict[str, Any] = {"request_timeout_ms": 30_000}


@dataclass(frozen=True)
class Clients:
    """Builds clients for one cluster and one identity (``security`` None = the process's)."""

    bootstrap: str
    security: Optional[KafkaSecurity] = None

    @classmethod
    def of(cls, settings: Any) -> "Clients":
        """For a worker's ``agents.settings.Settings`` (its bootstrap and its security)."""
        return cls(settings.bootstrap, settings.security)

    # -- aiokafka ---------------------------------------------------------------------------

    def aio_config(self) -> dict[str, Any]:
        """Connection keywords for an aiokafka client built elsewhere (bootstrap + security)."""
        return {"bootstrap_servers": self.bootstrap, **aiokafka_kwargs(self.security)}

    def aio_consumer(self, *topics: str, client_id: str, **kw: Any):
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(*topics, client_id=client_id, **{**AIO_CONSUMER, **self.aio_config(), **kw})

    def aio_producer(self, *, client_id: str, **kw: Any):
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(client_id=client_id, **{**AIO_PRODUCER, **self.aio_config(), **kw})

    # -- kafka-python -------------------------------------------------------------------------

    def sync_config(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, **kafka_python_kwargs(self.security)}

    def consumer(self, *topics: str, client_id: str = "ipanon", **kw: Any):
        from kafka import KafkaConsumer

        return KafkaConsumer(*topics, client_id=client_id, **{**SYNC_CONSUMER, **self.sync_config(), **kw})

    def producer(self, *, client_id: str = "ipanon", **kw: Any):
        from kafka import KafkaProducer

        return KafkaProducer(client_id=client_id, **{**SYNC_PRODUCER, **self.sync_config(), **kw})

    def admin(self, *, client_id: str = "ipanon-admin", **kw: Any):
        from kafka import KafkaAdminClient

        return KafkaAdminClient(client_id=client_id, **{**ADMIN, **self.sync_config(), **kw})


def clients(bootstrap: str, security: Optional[KafkaSecurity] = None) -> Clients:
    return Clients(bootstrap, security)


# -- the ack-flush routine ------------------------------------------------------------------

#: hands a batch of outputs to a producer, in order, and returns the futures of their
#: acknowledgements (queued, not awaited)
Hand = Callable[[Sequence[Any]], Awaitable[list]]


async def send_all(hand: Hand, outputs: Sequence[Any], *, retry_pause_s: Optional[float] = None,
                   on_retry: Optional[Callable[[Exception], None]] = None) -> int:
    """Hand ``outputs`` to a producer (``hand``: ``aio_batches`` or ``faust_sends``), then wait
    until every one is acknowledged; returns how many.  Without ``retry_pause_s`` the first
    failure is raised.  With it, any failure (handing over or an ack) calls
    ``on_retry(error)``, sleeps and sends the whole batch again, until the broker has taken all
    of it; cancellation always propagates."""
    while True:
        try:
            futs = await hand(outputs) if outputs else []
            if futs:
                await asyncio.gather(*futs)
            return len(outputs)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if retry_pause_s is None:
                raise
            if on_retry is not None:
                on_retry(e)
            await asyncio.sleep(retry_pause_s)


_M = 0x5BD1E995
_U32 = 0xFFFFFFFF
_WORDS: dict[int, Any] = {}  # word count -> its struct unpacker


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (``org.apache.kafka.common.utils.Utils.murmur2``), the same
    value as ``aiokafka.partitioner.murmur2``: the words taken with one ``struct`` call and the
    masks folded, about half its cost (docs/benchmarks.md)."""
    n = len(data)
    h = 0x9747B28C ^ n
    n4 = n >> 2
    if n4:
        words = _WORDS.get(n4)
        if words is None:
            words = _WORDS[n4] = struct.Struct(f"<{n4}I").unpack_from
        for k in words(data):
            k = (k * _M) & _U32
            k = ((k ^ (k >> 24)) * _M) & _U32
            h = ((h * _M) & _U32) ^ k
    tail = n & 3
    if tail:
        i = n - tail
        if tail == 3:
            h ^= data[i + 2] << 16
        if tail >= 2:
            h ^= data[i + 1] << 8
        h = ((h ^ data[i]) * _M) & _U32
    h = ((h ^ (h >> 13)) * _M) & _U32
    return h ^ (h >> 15)


#: key -> its positive murmur2; keys repeat (routing keys, aggregate cells), record ids do not:
#: cleared when full rather than evicted one by one
_HASHES: dict[bytes, int] = {}
_HASHES_MAX = 1 << 16


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (and ``mapping_table.partition_for``) gives
    ``key`` among ``partitions`` (numbered 0..partitions-1)."""
    h = _HASHES.get(key)
    if h is None:
        if len(_HASHES) >= _HASHES_MAX:
            _HASHES.clear()
        h = _HASHES[key] = murmur2(key) & 0x7FFFFFFF
    return h % partitions


def _partitions(producer: Any, topic: str) -> Any:
    """The partition ids the producer's metadata knows for ``topic`` (empty if it has none: the
    caller then leaves the choice to the producer's own partitioner)."""
    try:
        return producer._metadata.partitions_for_topic(topic) or ()
    except AttributeError:
        return ()


def aio_batches(producer: Any) -> Hand:
    """``hand`` for an aiokafka producer and outputs ``(topic, key, value, partition[,
    timestamp_ms])`` (partition None = the producer's partitioner, murmur2 of the key as for
    ``producer.send``, computed here by ``key_partition``: aiokafka's own is pure Python with
    two metadata lists per record; no timestamp = the producer's clock).  The records go into
    one batch per partition and one ``send_batch`` each: no per-record ``await`` (half the
    producer's CPU per record, docs/benchmarks.md).  Order per partition is the outputs' order."""
    async def hand(outputs: Sequence[Any]) -> list:
        futs: list = []
        open_: dict[tuple[str, int], Any] = {}
        widths: dict[str, int] = {}  # topic -> partition count (0: not 0..n-1, ask the producer)
        for o in outputs:
            topic, key, value, partition = o[0], o[1], o[2], o[3]
            ts = o[4] if len(o) > 4 else None
            width = widths.get(topic)
            if width is None:
                await producer.client._wait_on_metadata(topic)
                parts = _partitions(producer, topic)
                width = widths[topic] = len(parts) if set(parts) == set(range(len(parts))) else 0
            if partition is None:  # exactly what ``producer.send`` would choose
                if key is not None and width:
                    partition = key_partition(key, width)
                else:
                    partition = producer._partition(topic, None, key, value, key, value)
            tp = (topic, partition)
            b = open_.get(tp)
            if b is None:
                b = open_[tp] = producer.create_batch()
            if b.append(key=key, value=value, timestamp=ts) is None:  # full: send it, start the next
                futs.append(await producer.send_batch(b, topic, partition=partition))
                b = open_[tp] = producer.create_batch()
                if b.append(key=key, value=value, timestamp=ts) is None:  # larger than a batch: alone
                    del open_[tp]
                    futs.append(await producer.send(topic, value, key=key, partition=partition, timestamp_ms=ts))
        for (topic, partition), b in open_.items():
            futs.append(await producer.send_batch(b, topic, partition=partition))
        return futs

    return hand


async def faust_sends(outputs: Sequence[Any]) -> list:
    """``hand`` for outputs ``(faust topic, key, value, partition)``, one ``send`` each (Faust's
    producer has no batch call)."""
    return [await o[0].send(key=o[1], value=o[2], partition=o[3]) for o in outputs]
