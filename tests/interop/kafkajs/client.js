// Drives a broker with kafkajs (a pure JavaScript Kafka client with its own protocol code)
// for tests/interop/test_kafkajs.py. Usage: node client.js SCENARIO BOOTSTRAP TOPIC
// Prints one JSON object with what the scenario observed; the Python test asserts on it.
// Exits 1 with the error on stderr when kafkajs throws.
'use strict'

const { Kafka, logLevel, CompressionTypes } = require('kafkajs')

const [scenario, bootstrap, topic] = process.argv.slice(2)
const kafka = new Kafka({
  clientId: 'exacta-interop',
  brokers: [bootstrap],
  logLevel: logLevel.ERROR,
  retry: { retries: 8, initialRetryTime: 100 }
})

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// Reads `topic` from the start in a fresh group until `want` records arrived and nothing
// more came for `settleMs` (so records that must stay invisible get the chance to show).
async function readAll (topicName, { readUncommitted = false, want = 0, settleMs = 1500, timeoutMs = 20000 } = {}) {
  const consumer = kafka.consumer({
    groupId: `reader-${topicName}-${readUncommitted}-${Date.now()}`,
    readUncommitted,
    maxWaitTimeInMs: 100
  })
  await consumer.connect()
  await consumer.subscribe({ topics: [topicName], fromBeginning: true })
  const seen = []
  let last = Date.now()
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      seen.push({
        partition,
        offset: Number(message.offset),
        key: message.key ? message.key.toString() : null,
        value: message.value.toString(),
        headers: Object.fromEntries(Object.entries(message.headers || {}).map(([k, v]) => [k, v.toString()]))
      })
      last = Date.now()
    }
  })
  const started = Date.now()
  while (Date.now() - started < timeoutMs && (seen.length < want || Date.now() - last < settleMs)) {
    await sleep(50)
  }
  await consumer.disconnect()
  return seen
}

async function createTopic (admin, name, numPartitions) {
  await admin.createTopics({ topics: [{ topic: name, numPartitions }], waitForLeaders: true })
}

const scenarios = {
  // Idempotent producer (gzip and uncompressed batches, keys, headers), a group consumer,
  // admin offsets: every record arrives once with its key and headers.
  async basic () {
    const admin = kafka.admin()
    await admin.connect()
    await createTopic(admin, topic, 3)
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 5 })
    await producer.connect()
    const sent = []
    for (let batch = 0; batch < 10; batch++) {
      const messages = []
      for (let i = 0; i < 50; i++) {
        const n = batch * 50 + i
        messages.push({ key: `k${n % 7}`, value: `v${n}`, headers: { n: String(n) } })
        sent.push(n)
      }
      await producer.send({
        topic,
        messages,
        acks: -1,
        compression: batch % 2 ? CompressionTypes.GZIP : CompressionTypes.None
      })
    }
    await producer.disconnect()
    const seen = await readAll(topic, { want: sent.length, settleMs: 500 })
    const offsets = await admin.fetchTopicOffsets(topic)
    // A group that commits what it consumed.
    const groupId = `${topic}-group`
    const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100 })
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    let consumed = 0
    await consumer.run({ eachMessage: async () => { consumed++ } })
    const started = Date.now()
    while (consumed < sent.length && Date.now() - started < 20000) await sleep(50)
    await consumer.stop()
    await consumer.disconnect()
    const committed = await admin.fetchOffsets({ groupId, topics: [topic] })
    const groups = await admin.listGroups()
    await admin.disconnect()
    return {
      sent: sent.length,
      seen,
      end_offsets: offsets.map(o => ({ partition: o.partition, high: Number(o.high), low: Number(o.low) })),
      group_consumed: consumed,
      committed: committed[0].partitions.map(p => ({ partition: p.partition, offset: Number(p.offset) })),
      groups: groups.groups.map(g => g.groupId)
    }
  },

  // The admin calls an operator makes: metadata, configs, partitions, groups, offsets,
  // deletion.
  async admin () {
    const admin = kafka.admin()
    await admin.connect()
    await createTopic(admin, topic, 1)
    await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] })
    const metadata = await admin.fetchTopicMetadata({ topics: [topic] })
    const configs = await admin.describeConfigs({
      resources: [{ type: 2 /* TOPIC */, name: topic, configNames: ['retention.ms', 'cleanup.policy'] }],
      includeSynonyms: false
    })
    // AlterConfigs replaces the topic's overrides: after the second call only
    // retention.ms is overridden, max.message.bytes is back to its default.
    const alter = configEntries => admin.alterConfigs({ resources: [{ type: 2, name: topic, configEntries }] })
    await alter([{ name: 'retention.ms', value: '3600000' }, { name: 'max.message.bytes', value: '500000' }])
    await alter([{ name: 'retention.ms', value: '7200000' }])
    const altered = await admin.describeConfigs({
      resources: [{ type: 2, name: topic, configNames: ['retention.ms', 'max.message.bytes'] }],
      includeSynonyms: false
    })
    let badConfig = null
    try {
      await alter([{ name: 'retention.ms', value: 'soon' }])
    } catch (e) {
      badConfig = e.type
    }
    const cluster = await admin.describeCluster()
    const producer = kafka.producer()
    await producer.connect()
    await producer.send({ topic, messages: [0, 1, 2, 0, 1, 2].map(p => ({ value: `m${p}`, partition: p })) })
    await producer.disconnect()
    const groupId = `${topic}-admin-group`
    await admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '1' }, { partition: 1, offset: '2' }] })
    const afterSet = await admin.fetchOffsets({ groupId, topics: [topic] })
    await admin.resetOffsets({ groupId, topic, earliest: true })
    const afterReset = await admin.fetchOffsets({ groupId, topics: [topic] })
    const described = await admin.describeGroups([groupId])
    await admin.deleteGroups([groupId])
    const groupsAfterDelete = (await admin.listGroups()).groups.map(g => g.groupId)
    await admin.deleteTopics({ topics: [topic] })
    const topicsAfterDelete = await admin.listTopics()
    await admin.disconnect()
    const offsets = r => Object.fromEntries(r[0].partitions.map(p => [p.partition, Number(p.offset)]))
    return {
      partitions: metadata.topics[0].partitions.map(p => p.partitionId).sort(),
      configs: Object.fromEntries(configs.resources[0].configEntries.map(c => [c.configName, c.configValue])),
      altered: Object.fromEntries(altered.resources[0].configEntries.map(c => [c.configName, [c.configValue, c.isDefault]])),
      bad_config: badConfig,
      brokers: cluster.brokers.length,
      controller: cluster.controller,
      after_set: offsets(afterSet),
      after_reset: offsets(afterReset),
      group_state: described.groups[0].state,
      groups_after_delete: groupsAfterDelete,
      topic_deleted: !topicsAfterDelete.includes(topic)
    }
  },

  // An idempotent producer writes RECORDS values "0".."N-1" to partition 0 in sends of 50,
  // one at a time (through a proxy that drops responses: kafkajs retries with the same
  // sequence numbers); reports the offset each record was acknowledged at.
  async idempotent () {
    const records = Number(process.argv[5] || 2000)
    const admin = kafka.admin()
    await admin.connect()
    await createTopic(admin, topic, 1)
    await admin.disconnect()
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    const offsets = []
    for (let start = 0; start < records; start += 50) {
      const values = []
      for (let i = start; i < Math.min(records, start + 50); i++) values.push({ value: String(i), partition: 0 })
      const [meta] = await producer.send({ topic, messages: values, acks: -1, timeout: 10000 })
      values.forEach((_, i) => offsets.push(Number(meta.baseOffset) + i))
    }
    await producer.disconnect()
    return { offsets }
  },

  // A committed and an aborted transaction over two partitions.
  async visibility () {
    const admin = kafka.admin()
    await admin.connect()
    await createTopic(admin, topic, 2)
    await admin.disconnect()
    const producer = kafka.producer({ transactionalId: `${topic}-txn`, maxInFlightRequests: 1, idempotent: true })
    await producer.connect()
    let txn = await producer.transaction()
    await txn.send({ topic, messages: [{ value: 'c1', partition: 0 }, { value: 'c2', partition: 1 }] })
    await txn.commit()
    txn = await producer.transaction()
    await txn.send({ topic, messages: [{ value: 'a1', partition: 0 }, { value: 'a2', partition: 1 }] })
    await txn.abort()
    txn = await producer.transaction()
    await txn.send({ topic, messages: [{ value: 'c3', partition: 0 }] })
    await txn.commit()
    await producer.disconnect()
    const committed = await readAll(topic, { want: 3 })
    const uncommitted = await readAll(topic, { readUncommitted: true, want: 5 })
    return {
      read_committed: committed.map(m => m.value).sort(),
      read_uncommitted: uncommitted.map(m => m.value).sort()
    }
  },

  // Exactly-once consume-transform-produce: a group consumer reads TOPIC, a transactional
  // producer writes TOPIC-out and the consumer's offsets in the same transaction; every
  // third transaction is first aborted and then redone.
  async copier () {
    const input = topic
    const output = `${topic}-out`
    const groupId = `${topic}-copier`
    const total = 600
    const admin = kafka.admin()
    await admin.connect()
    await createTopic(admin, input, 2)
    await createTopic(admin, output, 2)
    const seed = kafka.producer({ idempotent: true })
    await seed.connect()
    const messages = []
    for (let i = 0; i < total; i++) messages.push({ value: `r${i}`, partition: i % 2 })
    await seed.send({ topic: input, messages, acks: -1 })
    await seed.disconnect()

    const producer = kafka.producer({ transactionalId: `${topic}-copier`, maxInFlightRequests: 1, idempotent: true })
    await producer.connect()
    const consumer = kafka.consumer({ groupId, readUncommitted: false, maxWaitTimeInMs: 100 })
    await consumer.connect()
    await consumer.subscribe({ topics: [input], fromBeginning: true })
    let copied = 0
    let txns = 0
    let aborted = 0
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
        // Chunks of up to 40 records, one transaction each.
        for (let start = 0; start < batch.messages.length; start += 40) {
          const chunk = batch.messages.slice(start, start + 40)
          const next = (Number(chunk[chunk.length - 1].offset) + 1).toString()
          const write = async txn => {
            await txn.send({ topic: output, messages: chunk.map(m => ({ value: m.value, partition: batch.partition })) })
            await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: input, partitions: [{ partition: batch.partition, offset: next }] }] })
          }
          txns++
          if (txns % 3 === 0) {
            const doomed = await producer.transaction()
            await write(doomed)
            await doomed.abort()
            aborted++
          }
          const txn = await producer.transaction()
          await write(txn)
          await txn.commit()
          copied += chunk.length
          resolveOffset(chunk[chunk.length - 1].offset)
          await heartbeat()
        }
      }
    })
    const started = Date.now()
    while (copied < total && Date.now() - started < 60000) await sleep(50)
    await consumer.stop()
    await consumer.disconnect()
    await producer.disconnect()
    const out = await readAll(output, { want: total })
    const committed = await admin.fetchOffsets({ groupId, topics: [input] })
    const ends = await admin.fetchTopicOffsets(input)
    await admin.disconnect()
    return {
      total,
      copied,
      aborted,
      output: out.map(m => m.value),
      committed: committed[0].partitions.map(p => ({ partition: p.partition, offset: Number(p.offset) })).sort((a, b) => a.partition - b.partition),
      input_ends: ends.map(o => ({ partition: o.partition, offset: Number(o.high) })).sort((a, b) => a.partition - b.partition)
    }
  },

  // Two producers with one transactional id: the second fences the first, whose open
  // transaction is aborted and whose commit fails.
  async fencing () {
    const admin = kafka.admin()
    await admin.connect()
    await createTopic(admin, topic, 1)
    await admin.disconnect()
    const transactionalId = `${topic}-txn`
    const zombie = kafka.producer({ transactionalId, maxInFlightRequests: 1, idempotent: true })
    await zombie.connect()
    const zombieTxn = await zombie.transaction()
    await zombieTxn.send({ topic, messages: [{ value: 'zombie' }] })
    const successor = kafka.producer({ transactionalId, maxInFlightRequests: 1, idempotent: true })
    await successor.connect()
    // kafkajs sends InitProducerId with a transaction's start: this fences the zombie.
    const txn = await successor.transaction()
    let zombieError = null
    try {
      await zombieTxn.commit()
    } catch (e) {
      zombieError = e.type || e.name
    }
    await txn.send({ topic, messages: [{ value: 'successor' }] })
    await txn.commit()
    await successor.disconnect()
    await zombie.disconnect().catch(() => {})
    const committed = await readAll(topic, { want: 1 })
    return { zombie_error: zombieError, read_committed: committed.map(m => m.value) }
  }
}

async function main () {
  const run = scenarios[scenario]
  if (!run) throw new Error(`unknown scenario ${scenario}`)
  return run()
}

// Exit only once stdout is written: a pipe takes large writes asynchronously.
main().then(result => process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0)), e => {
  process.stderr.write(`kafkajs ${scenario} failed: ${e && e.stack ? e.stack : e}\n`)
  process.exit(1)
})
