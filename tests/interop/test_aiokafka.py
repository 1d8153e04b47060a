"""aiokafka (asyncio Kafka client with its own protocol code and older API versions) against
the real broker: idempotent compressed produce, group consumption and committed offsets,
transactions under both isolation levels, an exactly-once copier with aborts and offsets in
the transaction, and zombie fencing."""

import asyncio
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, ProducerFenced


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def create(bootstrap, *topics):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in topics])
    finally:
        await admin.close()


async def read_all(bootstrap, topic, isolation, want, settle=1.5, timeout=20):
    """Values of `topic` from the start as an `isolation` consumer sees them: until `want`
    arrived and nothing more came for `settle` seconds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, isolation_level=isolation,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = loop.time()
    try:
        while loop.time() < deadline and (len(out) < want or loop.time() - last < settle):
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for m in records:
                    out.append(m)
                    last = loop.time()
    finally:
        await consumer.stop()
    return out


def test_idempotent_compressed_produce_and_group_offsets(broker):
    topic, n = "aio-basic", 600

    async def scenario():
        await create(broker.bootstrap, (topic, 3))
        for codec in ("gzip", "lz4", None):
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True,
                                        acks="all", compression_type=codec, linger_ms=5)
            await producer.start()
            try:
                futures = [await producer.send(topic, key=f"k{i % 5}".encode(), value=f"{codec}-{i}".encode(),
                                               headers=[("i", str(i).encode())])
                           for i in range(n // 3)]
                await asyncio.gather(*futures)
            finally:
                await producer.stop()
        seen = await read_all(broker.bootstrap, topic, "read_uncommitted", n, settle=0.5)
        group = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id="aio-group",
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 fetch_max_wait_ms=100)
        await group.start()
        consumed = 0
        try:
            while consumed < n:
                batch = await group.getmany(timeout_ms=500)
                consumed += sum(len(r) for r in batch.values())
            await group.commit()
            parts = [TopicPartition(topic, p) for p in range(3)]
            ends = await group.end_offsets(parts)
            committed = {tp.partition: await group.committed(tp) for tp in parts}
        finally:
            await group.stop()
        return seen, consumed, {tp.partition: o for tp, o in ends.items()}, committed

    seen, consumed, ends, committed = run(scenario())
    values = [m.value.decode() for m in seen]
    expected = [f"{codec}-{i}" for codec in ("gzip", "lz4", None) for i in range(n // 3)]
    assert Counter(values) == Counter(expected), "each record exactly once"
    for m in seen:
        i = int(m.value.decode().rsplit("-", 1)[1])
        assert m.key == f"k{i % 5}".encode()
        assert m.headers == (("i", str(i).encode()),) or list(m.headers) == [("i", str(i).encode())]
    by_partition = Counter(m.partition for m in seen)
    assert ends == dict(by_partition)
    assert consumed == n
    assert committed == ends


def test_transactions_visible_only_when_committed(broker):
    topic = "aio-visibility"

    async def scenario():
        await create(broker.bootstrap, (topic, 2))
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="aio-vis")
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"c1", partition=0)
                await producer.send_and_wait(topic, b"c2", partition=1)
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"a1", partition=0)
            await producer.send_and_wait(topic, b"a2", partition=1)
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, b"c3", partition=0)
        finally:
            await producer.stop()
        committed = await read_all(broker.bootstrap, topic, "read_committed", 3)
        uncommitted = await read_all(broker.bootstrap, topic, "read_uncommitted", 5)
        return sorted(m.value for m in committed), sorted(m.value for m in uncommitted)

    committed, uncommitted = run(scenario())
    assert committed == [b"c1", b"c2", b"c3"]
    assert uncommitted == [b"a1", b"a2", b"c1", b"c2", b"c3"]


def test_exactly_once_copier_with_aborted_transactions(broker):
    source, sink, group, total = "aio-in", "aio-out", "aio-copier", 500

    async def scenario():
        await create(broker.bootstrap, (source, 2), (sink, 2))
        seed = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
        await seed.start()
        try:
            for i in range(total):
                await seed.send(source, f"r{i}".encode(), partition=i % 2)
            await seed.flush()
        finally:
            await seed.stop()
        consumer = AIOKafkaConsumer(source, bootstrap_servers=broker.bootstrap, group_id=group,
                                    isolation_level="read_committed", enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                    max_poll_records=40)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="aio-copier")
        await consumer.start()
        await producer.start()
        copied = txns = aborted = 0
        try:
            while copied < total:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    offsets = {tp: records[-1].offset + 1}
                    txns += 1
                    if txns % 3 == 0:
                        # Written, offsets sent, then aborted: none of it may show.
                        await producer.begin_transaction()
                        for m in records:
                            await producer.send(sink, m.value, partition=tp.partition)
                        await producer.send_offsets_to_transaction(offsets, group)
                        await producer.abort_transaction()
                        aborted += 1
                    async with producer.transaction():
                        for m in records:
                            await producer.send(sink, m.value, partition=tp.partition)
                        await producer.send_offsets_to_transaction(offsets, group)
                    copied += len(records)
        finally:
            await producer.stop()
            await consumer.stop()
        out = await read_all(broker.bootstrap, sink, "read_committed", total)
        check = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                                 enable_auto_commit=False)
        await check.start()
        try:
            parts = [TopicPartition(source, p) for p in range(2)]
            committed = {tp.partition: await check.committed(tp) for tp in parts}
            ends = {tp.partition: o for tp, o in (await check.end_offsets(parts)).items()}
        finally:
            await check.stop()
        return copied, aborted, [m.value.decode() for m in out], committed, ends

    copied, aborted, out, committed, ends = run(scenario())
    assert copied == total
    assert aborted > 0
    assert Counter(out) == Counter(f"r{i}" for i in range(total))
    assert committed == ends


def test_zombie_producer_is_fenced(broker):
    topic = "aio-fencing"

    async def scenario():
        await create(broker.bootstrap, (topic, 1))
        zombie = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="aio-fence")
        await zombie.start()
        await zombie.begin_transaction()
        await zombie.send_and_wait(topic, b"zombie")
        successor = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="aio-fence")
        await successor.start()  # InitProducerId: fences the zombie and aborts its transaction
        error = None
        try:
            await zombie.commit_transaction()
        except KafkaError as e:
            error = e
        async with successor.transaction():
            await successor.send_and_wait(topic, b"successor")
        await successor.stop()
        try:
            await zombie.stop()
        except KafkaError:
            pass
        seen = await read_all(broker.bootstrap, topic, "read_committed", 1)
        return error, [m.value for m in seen]

    error, seen = run(scenario())
    assert isinstance(error, ProducerFenced), repr(error)
    assert seen == [b"successor"]


@pytest.fixture(autouse=True)
def _no_connection_errors(broker):
    yield
    log = broker.log_path.read_text()
    assert "could not encode a response" not in log
    assert "closing connection: bad request" not in log
