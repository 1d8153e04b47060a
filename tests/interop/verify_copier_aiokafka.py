"""An `exacta verify` copier built on aiokafka, for
`exacta verify --copier-command "python tests/interop/verify_copier_aiokafka.py"`.

It keeps the copier contract of `exacta-verify copy` (crates/verify/src/copier.rs): the
same flags, the same JSON-lines history (flushed before every commit or abort request),
exit 0 once the stop file exists or the verifier is gone, exit 3 when fenced or when the
producer can no longer be used (the verifier restarts it with the same transactional id).
aiokafka sends TxnOffsetCommit without group member information (before KIP-447), so
offsets are checked by producer and transaction only.
"""

import asyncio
import os
import random
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (IllegalOperation, InvalidProducerEpoch, KafkaError, ProducerFenced)

from copier_contract import EXIT_RESTART, History, now, parse_args

args = parse_args()
history = History(args.history)
record = history.record


def say(text):
    print(f"copier {args.tag}: {text}", file=sys.stderr, flush=True)


class Revocations(ConsumerRebalanceListener):
    """aiokafka commits offsets without group generation (pre-KIP-447) and reads them
    without require_stable, so nothing on the broker stops an old owner from committing
    offsets of a partition it has lost: the listener holds the rebalance until the
    transaction in progress has ended (the pre-KIP-447 rule), so the next owner reads
    offsets that are final."""
    revoked = False
    idle = None  # asyncio.Event: set while no transaction is open

    async def on_partitions_revoked(self, revoked):
        Revocations.revoked = True
        await Revocations.idle.wait()

    async def on_partitions_assigned(self, assigned):
        pass


async def rewind(consumer):
    for tp in consumer.assignment():
        off = await consumer.committed(tp)
        if off is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, off)


def on_ack(txn, id_, out_p):
    def done(future):
        if future.cancelled():
            record("ack", txn=txn, id=id_, out_p=out_p, off=None, err="cancelled")
        elif future.exception() is not None:
            record("ack", txn=txn, id=id_, out_p=out_p, off=None, err=repr(future.exception()))
        else:
            record("ack", txn=txn, id=id_, out_p=out_p, off=future.result().offset, err=None)
    return done


async def main():
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap_server, group_id=args.group,
                                isolation_level="read_committed", enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=6000,
                                heartbeat_interval_ms=500, fetch_max_wait_ms=100,
                                # aiokafka does not refresh metadata when the ListOffsets
                                # of an offset reset fails with NOT_LEADER_OR_FOLLOWER (it
                                # retries the old leader until the next periodic refresh,
                                # 5 min by default): after a leader moves, keep that short.
                                metadata_max_age_ms=2000)
    Revocations.idle = asyncio.Event()
    Revocations.idle.set()
    consumer.subscribe([args.input], listener=Revocations())
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap_server,
                                transactional_id=args.transactional_id,
                                transaction_timeout_ms=args.transaction_timeout_ms, linger_ms=2,
                                retry_backoff_ms=20)
    try:
        await producer.start()
        await consumer.start()
    except KafkaError as e:
        say(f"start: {e!r}")
        return EXIT_RESTART
    rng = random.Random(args.seed)
    parent = os.getppid()
    seq = 0
    try:
        while True:
            if os.getppid() != parent or os.path.exists(args.stop_file):
                history.flush()
                return 0
            polled = await consumer.getmany(timeout_ms=200, max_records=args.records_per_txn)
            batch = [(tp.partition, r.offset, int(r.value))
                     for tp, records in polled.items() for r in records]
            if Revocations.revoked:
                Revocations.revoked = False
                await rewind(consumer)
                continue
            if not batch:
                continue
            seq += 1
            txn = f"{args.tag}.{seq}"
            record("begin", txn=txn, t=now())
            Revocations.idle.clear()
            await producer.begin_transaction()
            deliberate = rng.random() < args.abort_rate
            try:
                await asyncio.sleep(args.pause_ms / 1000)
                for in_p, in_off, id_ in batch:
                    out_p = id_ % args.output_partitions
                    record("send", txn=txn, id=id_, in_p=in_p, in_off=in_off, out_p=out_p)
                    future = await producer.send(args.output, value=f"{id_} {txn}".encode(),
                                                 partition=out_p)
                    future.add_done_callback(on_ack(txn, id_, out_p))
                await producer.flush()
                if deliberate:
                    raise StopIteration
                offsets = {}
                for in_p, in_off, _ in batch:
                    offsets[in_p] = max(offsets.get(in_p, 0), in_off + 1)
                record("commit", txn=txn, offsets=sorted(offsets.items()), t=now())
                history.flush()
                await producer.send_offsets_to_transaction(
                    {TopicPartition(args.input, q): o for q, o in offsets.items()}, args.group)
                try:
                    await producer.commit_transaction()
                except KafkaError as e:
                    record("committed", txn=txn, ok=False, err=repr(e), t=now())
                    raise
                record("committed", txn=txn, ok=True, err=None, t=now())
            except (ProducerFenced, InvalidProducerEpoch) as e:
                say(f"{txn}: fenced: {e!r}")
                history.flush()
                return EXIT_RESTART
            except (KafkaError, StopIteration) as e:
                if not isinstance(e, StopIteration):
                    say(f"{txn}: {e!r}; aborting")
                record("abort", txn=txn, deliberate=isinstance(e, StopIteration), t=now())
                history.flush()
                try:
                    await producer.abort_transaction()
                except (KafkaError, IllegalOperation) as e2:
                    say(f"abort of {txn}: {e2!r}")
                    return EXIT_RESTART
                Revocations.idle.set()
                if args.bug != "no-rewind":
                    await rewind(consumer)
            finally:
                Revocations.idle.set()
    finally:
        history.flush()
        for close in (consumer.stop, producer.stop):
            try:
                await asyncio.wait_for(close(), 5)
            except Exception as e:  # closing a fenced or broken client: nothing to keep
                say(f"closing: {e!r}")


sys.exit(asyncio.run(main()))
