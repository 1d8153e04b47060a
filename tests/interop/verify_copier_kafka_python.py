"""An `exacta verify` copier built on kafka-python, for
`exacta verify --copier-command "python tests/interop/verify_copier_kafka_python.py"`.

It keeps the copier contract of `exacta-verify copy` (crates/verify/src/copier.rs): the
same flags, the same JSON-lines history (flushed before every commit or abort request),
exit 0 once the stop file exists or the verifier is gone, exit 3 when fenced.
"""

import os
import random
import sys
import time

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, ProducerFencedError, InvalidProducerEpochError
from kafka.structs import OffsetAndMetadata

from copier_contract import EXIT_RESTART, History, now, parse_args

args = parse_args()
history = History(args.history)
record = history.record


class Revocations(ConsumerRebalanceListener):
    revoked = False

    def on_partitions_revoked(self, revoked):
        Revocations.revoked = True

    def on_partitions_assigned(self, assigned):
        pass


consumer = KafkaConsumer(bootstrap_servers=args.bootstrap_server, group_id=args.group,
                         isolation_level="read_committed", enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=6000,
                         heartbeat_interval_ms=500, fetch_max_wait_ms=100)
consumer.subscribe([args.input], listener=Revocations())
producer = KafkaProducer(bootstrap_servers=args.bootstrap_server,
                         transactional_id=args.transactional_id,
                         transaction_timeout_ms=args.transaction_timeout_ms, linger_ms=2,
                         retry_backoff_ms=20, reconnect_backoff_ms=10,
                         reconnect_backoff_max_ms=200)
try:
    producer.init_transactions()
except KafkaError as e:
    print(f"copier {args.tag}: init_transactions: {e!r}", file=sys.stderr, flush=True)
    sys.exit(EXIT_RESTART)

rng = random.Random(args.seed)
parent = os.getppid()


def rewind():
    for tp in consumer.assignment():
        off = consumer.committed(tp)
        if off is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, off)


def acked(txn, id_, out_p):
    def ok(md):
        record("ack", txn=txn, id=id_, out_p=out_p, off=md.offset, err=None)

    def failed(e):
        record("ack", txn=txn, id=id_, out_p=out_p, off=None, err=repr(e))
    return ok, failed


seq = 0
while True:
    if os.getppid() != parent or os.path.exists(args.stop_file):
        consumer.close()
        history.flush()
        sys.exit(0)
    batch = []
    deadline = time.time() + 0.2
    while len(batch) < args.records_per_txn and time.time() < deadline:
        polled = consumer.poll(timeout_ms=max(1, int((deadline - time.time()) * 1000)),
                               max_records=args.records_per_txn - len(batch))
        for tp, records in polled.items():
            batch += [(tp.partition, r.offset, int(r.value)) for r in records]
    if Revocations.revoked:
        Revocations.revoked = False
        rewind()
        continue
    if not batch:
        continue
    seq += 1
    txn = f"{args.tag}.{seq}"
    record("begin", txn=txn, t=now())
    producer.begin_transaction()
    deliberate = rng.random() < args.abort_rate
    try:
        time.sleep(args.pause_ms / 1000)
        for in_p, in_off, id_ in batch:
            out_p = id_ % args.output_partitions
            record("send", txn=txn, id=id_, in_p=in_p, in_off=in_off, out_p=out_p)
            ok, failed = acked(txn, id_, out_p)
            producer.send(args.output, value=f"{id_} {txn}".encode(), partition=out_p) \
                .add_callback(ok).add_errback(failed)
        producer.flush()
        if deliberate:
            raise StopIteration
        offsets = {}
        for in_p, in_off, _ in batch:
            offsets[in_p] = max(offsets.get(in_p, 0), in_off + 1)
        record("commit", txn=txn, offsets=sorted(offsets.items()), t=now())
        history.flush()
        producer.send_offsets_to_transaction(
            {TopicPartition(args.input, q): OffsetAndMetadata(o, "", -1)
             for q, o in offsets.items()}, consumer.group_metadata())
        try:
            producer.commit_transaction()
        except KafkaError as e:
            record("committed", txn=txn, ok=False, err=repr(e), t=now())
            raise
        record("committed", txn=txn, ok=True, err=None, t=now())
    except (ProducerFencedError, InvalidProducerEpochError) as e:
        print(f"copier {args.tag}: {txn}: fenced: {e!r}", file=sys.stderr, flush=True)
        history.flush()
        sys.exit(EXIT_RESTART)
    except (KafkaError, StopIteration) as e:
        if not isinstance(e, StopIteration):
            print(f"copier {args.tag}: {txn}: {e!r}; aborting", file=sys.stderr, flush=True)
        record("abort", txn=txn, deliberate=isinstance(e, StopIteration), t=now())
        history.flush()
        try:
            producer.abort_transaction()
        except KafkaError as e2:
            print(f"copier {args.tag}: abort of {txn}: {e2!r}", file=sys.stderr, flush=True)
            sys.exit(EXIT_RESTART)
        if args.bug != "no-rewind":
            rewind()
