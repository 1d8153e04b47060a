// An `exacta verify` copier built on kafkajs, for
// `exacta verify --copier-command "node tests/interop/kafkajs/verify_copier.js"`.
//
// It keeps the copier contract of `exacta-verify copy` (crates/verify/src/copier.rs): the
// same flags, the same JSON-lines history (written synchronously, so it is on file before
// every commit or abort request), exit 0 once the stop file exists or the verifier is gone,
// exit 3 when fenced or after any failed transaction (the verifier restarts it with the same
// transactional id, which fences the old instance at start and rewinds to the committed
// offsets). A deliberate abort is
// followed by the same records in a new transaction: they are read again, as a rewind
// would. kafkajs sends TxnOffsetCommit without group member information (before KIP-447).
'use strict'

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

const EXIT_RESTART = 3

const args = {}
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i += 2) {
  args[argv[i].replace(/^--/, '').replace(/-/g, '_')] = argv[i + 1]
}
const recordsPerTxn = Number(args.records_per_txn)
const outputPartitions = Number(args.output_partitions)
const abortRate = Number(args.abort_rate)
const pauseMs = Number(args.pause_ms || 0)

const history = fs.openSync(args.history, 'a')
const record = (op, fields) => fs.writeSync(history, JSON.stringify({ op, ...fields }) + '\n')
const say = text => process.stderr.write(`copier ${args.tag}: ${text}\n`)
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// A seeded generator (mulberry32), so each copier's deliberate aborts are reproducible.
let state = Number(args.seed) >>> 0
function random () {
  state = (state + 0x6D2B79F5) >>> 0
  let t = state
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const kafka = new Kafka({
  clientId: `exacta-verify-${args.tag}`,
  brokers: args.bootstrap_server.split(','),
  logLevel: logLevel.NOTHING,
  retry: { retries: 10, initialRetryTime: 50, maxRetryTime: 1000 }
})
const producer = kafka.producer({
  transactionalId: args.transactional_id,
  transactionTimeout: Number(args.transaction_timeout_ms),
  maxInFlightRequests: 1,
  idempotent: true
})
const consumer = kafka.consumer({
  groupId: args.group,
  readUncommitted: false,
  sessionTimeout: 6000,
  heartbeatInterval: 500,
  maxWaitTimeInMs: 100
})

let seq = 0
let exiting = false
async function exit (code) {
  if (exiting) return
  exiting = true
  const close = Promise.all([consumer.disconnect(), producer.disconnect()]).catch(() => {})
  await Promise.race([close, sleep(5000)])
  fs.closeSync(history)
  process.exit(code)
}

// One transaction: the records (sent per output partition), then the input offsets.
async function copy (partition, chunk, deliberate) {
  seq++
  const txn = `${args.tag}.${seq}`
  record('begin', { txn, t: Date.now() })
  const transaction = await producer.transaction()
  try {
    if (pauseMs) await sleep(pauseMs)
    const byOutput = new Map()
    for (const m of chunk) {
      const id = Number(m.value.toString())
      const outP = id % outputPartitions
      record('send', { txn, id, in_p: partition, in_off: Number(m.offset), out_p: outP })
      if (!byOutput.has(outP)) byOutput.set(outP, [])
      byOutput.get(outP).push(id)
    }
    for (const [outP, ids] of byOutput) {
      try {
        const [meta] = await transaction.send({
          topic: args.output,
          messages: ids.map(id => ({ value: `${id} ${txn}`, partition: outP }))
        })
        const base = Number(meta.baseOffset)
        ids.forEach((id, i) => record('ack', { txn, id, out_p: outP, off: base + i, err: null }))
      } catch (e) {
        ids.forEach(id => record('ack', { txn, id, out_p: outP, off: null, err: String(e.type || e.name) }))
        throw e
      }
    }
    if (deliberate) {
      record('abort', { txn, deliberate: true, t: Date.now() })
      await transaction.abort()
      return false
    }
    const next = Number(chunk[chunk.length - 1].offset) + 1
    record('commit', { txn, offsets: [[partition, next]], t: Date.now() })
    await transaction.sendOffsets({
      consumerGroupId: args.group,
      topics: [{ topic: args.input, partitions: [{ partition, offset: String(next) }] }]
    })
    try {
      await transaction.commit()
    } catch (e) {
      record('committed', { txn, ok: false, err: String(e.type || e.name), t: Date.now() })
      throw e
    }
    record('committed', { txn, ok: true, err: null, t: Date.now() })
    return true
  } catch (e) {
    const type = String(e.type || e.name)
    say(`${txn}: ${type}: ${e.message}`)
    if (!/FENCED|INVALID_PRODUCER_EPOCH/.test(type) && transaction.isActive()) {
      record('abort', { txn, deliberate: false, t: Date.now() })
      await transaction.abort().catch(e2 => say(`abort of ${txn}: ${e2.message}`))
    }
    await exit(EXIT_RESTART)
    return false
  }
}

async function main () {
  const parent = process.ppid
  setInterval(() => {
    if (process.ppid !== parent || fs.existsSync(args.stop_file)) exit(0)
  }, 100)
  try {
    await producer.connect()
    // kafkajs sends InitProducerId with the first transaction() only; start (and drop) an
    // empty one now, so the predecessor with this transactional id is fenced and its open
    // transaction aborted at once, as librdkafka's init_transactions() does, rather than
    // holding back the output until it times out.
    await (await producer.transaction()).abort()
    await consumer.connect()
    await consumer.subscribe({ topics: [args.input], fromBeginning: true })
  } catch (e) {
    say(`start: ${e.message}`)
    return exit(EXIT_RESTART)
  }
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
      for (let start = 0; start < batch.messages.length; start += recordsPerTxn) {
        if (!isRunning() || isStale() || exiting) return
        const chunk = batch.messages.slice(start, start + recordsPerTxn)
        if (random() < abortRate) await copy(batch.partition, chunk, true)
        if (exiting || !(await copy(batch.partition, chunk, false))) return
        resolveOffset(chunk[chunk.length - 1].offset)
        await heartbeat()
      }
    }
  })
}

main().catch(e => {
  say(`failed: ${e && e.stack ? e.stack : e}`)
  exit(EXIT_RESTART)
})
