/**
 * Heap per waiting task: 100,000 tasks waiting on a budget or a bulkhead that is full, each
 * variant in a fresh Node process (`--expose-gc`), the heap measured after two full GCs before
 * the tasks start and once they all wait. Ratios against cockatiel's bulkhead; p-limit beside it.
 *
 * In Effect a task that waits is a fiber, and the fiber is most of the cost: the "fibers
 * alone" rows are fibers parked on `Effect.never`, so the difference to them is what the
 * limiter's own queue costs. The stream row is the Effect way to have 100,000 tasks wait: as
 * elements of a `Stream` (or `Effect.forEach` with a concurrency), so only those in flight are
 * fibers (DESIGN.md: bound the fibers upstream).
 *
 * Run with `npm run bench -- memory` (about a minute; it starts one process per variant).
 */
import { bulkhead as cockatielBulkhead } from "cockatiel"
import { Effect, Stream } from "effect"
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import pLimit from "p-limit"
import { Bulkhead, TokenBudget } from "../src/index.js"

const WAITERS = 100_000

interface Variant {
  readonly name: string
  /** Starts `WAITERS` waiting tasks; resolves once they all wait, with what must stay reachable. */
  readonly start: () => Promise<unknown>
}

const macrotask = () => new Promise<void>((resolve) => setImmediate(resolve))
const until = async (done: () => boolean) => {
  while (!done()) await macrotask()
}

/** Runs `effect` (which forks the waiting tasks) and resolves once `ready` says they all wait. */
const background = async <R, E>(effect: Effect.Effect<R, E>, ready: (r: R) => Effect.Effect<boolean>): Promise<unknown> => {
  const value = await Effect.runPromise(effect)
  await until(() => Effect.runSync(ready(value)))
  await macrotask()
  return value
}

const holdForever = Effect.never

/** Counts the tasks that reached the call, for variants with no queue length to read. */
let started = 0
const counted = <A>(effect: Effect.Effect<A>) => Effect.zipRight(Effect.sync(() => started++), effect)
const allStarted = (n: number) => () => Effect.sync(() => started === n)

/** A budget that refills so slowly that nobody waiting is let through while it is measured. */
const slow = { limit: 1000, per: "1000 days" } as const

const variants: ReadonlyArray<Variant> = [
  {
    name: "Effect: fibers alone, on Effect.never (Effect.forEach, unbounded)",
    start: () =>
      background(
        Effect.forkDaemon(Effect.forEach(Array.from({ length: WAITERS }), () => counted(holdForever), { concurrency: "unbounded", discard: true })),
        allStarted(WAITERS)
      )
  },
  {
    name: "Effect: fibers alone, on Effect.never (Effect.runFork, one each)",
    start: () =>
      background(Effect.sync(() => Array.from({ length: WAITERS }, () => Effect.runFork(counted(holdForever)))), allStarted(WAITERS))
  },
  {
    name: "Effect: Bulkhead (fibers from Effect.forEach, unbounded)",
    start: () =>
      background(
        Effect.gen(function* () {
          const bulkhead = yield* Bulkhead.make({ permits: 1 })
          yield* Effect.forkDaemon(Effect.forEach(Array.from({ length: WAITERS + 1 }), () => bulkhead.withPermit(holdForever), {
            concurrency: "unbounded",
            discard: true
          }))
          return bulkhead
        }),
        (bulkhead) => Effect.map(bulkhead.waiting, (n) => n === WAITERS)
      )
  },
  {
    name: "Effect: Bulkhead (fibers from Effect.runFork, one each)",
    start: () =>
      background(
        Effect.gen(function* () {
          const bulkhead = yield* Bulkhead.make({ permits: 1 })
          const fibers = Array.from({ length: WAITERS + 1 }, () => Effect.runFork(bulkhead.withPermit(holdForever)))
          return { bulkhead, fibers }
        }),
        ({ bulkhead }) => Effect.map(bulkhead.waiting, (n) => n === WAITERS)
      )
  },
  {
    name: "Effect: TokenBudget (fibers from Effect.forEach, unbounded)",
    start: () =>
      background(
        Effect.gen(function* () {
          const budget = yield* TokenBudget.make({ limits: { tokens: slow } })
          yield* budget.reserve({ tokens: 1000 })
          yield* Effect.forkDaemon(Effect.forEach(Array.from({ length: WAITERS }), () => budget.reserve({ tokens: 1 }), {
            concurrency: "unbounded",
            discard: true
          }))
          return budget
        }),
        (budget) => Effect.map(budget.state, (state) => state.waiting === WAITERS)
      )
  },
  {
    name: "Effect: TokenBudget (fibers from Effect.runFork, one each)",
    start: () =>
      background(
        Effect.gen(function* () {
          const budget = yield* TokenBudget.make({ limits: { tokens: slow } })
          yield* budget.reserve({ tokens: 1000 })
          const fibers = Array.from({ length: WAITERS }, () => Effect.runFork(budget.reserve({ tokens: 1 })))
          return { budget, fibers }
        }),
        ({ budget }) => Effect.map(budget.state, (state) => state.waiting === WAITERS)
      )
  },
  {
    name: "Effect: TokenBudget, tasks as stream elements (Stream.mapEffect, 64 at a time)",
    start: () =>
      background(
        Effect.gen(function* () {
          const budget = yield* TokenBudget.make({ limits: { tokens: slow } })
          yield* budget.reserve({ tokens: 1000 })
          yield* Effect.forkDaemon(Stream.runDrain(Stream.mapEffect(Stream.range(1, WAITERS), () => budget.reserve({ tokens: 1 }), {
            concurrency: 64
          })))
          return budget
        }),
        (budget) => Effect.map(budget.state, (state) => state.waiting === 64)
      )
  },
  {
    name: "Effect: built-in Semaphore (fibers from Effect.forEach, unbounded)",
    start: () =>
      background(
        Effect.gen(function* () {
          const semaphore = yield* Effect.makeSemaphore(1)
          yield* Effect.forkDaemon(Effect.forEach(Array.from({ length: WAITERS + 1 }), () => counted(semaphore.withPermits(1)(holdForever)), {
            concurrency: "unbounded",
            discard: true
          }))
          return semaphore
        }),
        allStarted(WAITERS + 1)
      )
  },
  {
    name: "cockatiel: bulkhead(1, Infinity)",
    start: async () => {
      const bulkhead = cockatielBulkhead(1, Infinity)
      const pending = Array.from({ length: WAITERS + 1 }, () => bulkhead.execute(() => new Promise(() => {})))
      await until(() => bulkhead.queueSlots === Infinity)
      await macrotask()
      return { bulkhead, pending }
    }
  },
  {
    name: "p-limit(1)",
    start: async () => {
      const limit = pLimit(1)
      const pending = Array.from({ length: WAITERS + 1 }, () => limit(() => new Promise(() => {})))
      await until(() => limit.pendingCount === WAITERS)
      return { limit, pending }
    }
  }
]

const gc = (globalThis as { gc?: () => void }).gc

const child = async (index: number) => {
  const variant = variants[index]!
  gc!()
  gc!()
  const before = process.memoryUsage().heapUsed
  const kept = await variant.start()
  gc!()
  gc!()
  const after = process.memoryUsage().heapUsed
  process.stdout.write(JSON.stringify({ bytes: (after - before) / WAITERS, kept: kept !== undefined }) + "\n")
  process.exit(0)
}

const parent = () => {
  const self = fileURLToPath(import.meta.url)
  const rows: Array<{ readonly name: string; readonly bytes: number }> = []
  for (let i = 0; i < variants.length; i++) {
    console.error(`  ${variants[i]!.name}...`)
    const run = spawnSync(process.execPath, ["--expose-gc", "--import", "tsx", self, String(i)], { encoding: "utf8" })
    const line = run.stdout.trim().split("\n").pop() ?? ""
    if (run.status !== 0 || line === "") throw new Error(`variant ${i} failed: ${run.stderr}`)
    rows.push({ name: variants[i]!.name, bytes: (JSON.parse(line) as { bytes: number }).bytes })
  }
  const peer = rows.find((r) => r.name.startsWith("cockatiel"))!.bytes
  console.log("")
  console.log(`### Memory: ${WAITERS.toLocaleString("en")} tasks waiting (fresh process per variant)`)
  console.log("")
  console.log("| variant | heap per waiting task | vs cockatiel's bulkhead |")
  console.log("|---|---:|---:|")
  for (const row of rows) {
    console.log(`| ${row.name} | ${row.bytes >= 1000 ? `${(row.bytes / 1024).toFixed(2)} KiB` : `${row.bytes.toFixed(0)} B`} | ${(row.bytes / peer).toFixed(2)}× |`)
  }
}

const arg = process.argv[2]
if (arg === undefined) parent()
else {
  child(Number(arg)).catch((error) => {
    console.error(error)
    process.exit(1)
  })
}
