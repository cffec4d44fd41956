/**
 * Parallel: why the seed's batch-by-batch `batchProcess` loses to a sliding window, measured;
 * `settle` (allSettled with a limit and input indexes) and `all` (fail fast, siblings
 * interrupted; the seed's `Promise.all` left them running).
 *
 * The makespans are measured under Effect's `TestClock`: 200 calls whose latencies are drawn
 * from an exponential distribution (mean 20 ms, a fixed seed) run in virtual time, so the
 * numbers are exact and the example takes no real 20 ms per call.
 *
 *   npx tsx examples/parallel.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Effect, Fiber, Option, TestClock, TestContext } from "effect"
import { Parallel } from "../src/index.js"

/** A small seeded generator (mulberry32), so every run draws the same latencies. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const next = random(42)
const latencies = Array.from({ length: 200 }, () => Math.max(1, Math.round(-20 * Math.log(1 - next()))))
const concurrency = 8
const call = (latency: number) => Effect.sleep(latency)

/** The seed's `batchProcess`: batches of `concurrency`, each waiting for its slowest call. */
const batchProcess = <T>(items: ReadonlyArray<T>, f: (item: T) => Effect.Effect<void>, size: number) =>
  Effect.forEach(
    Array.from({ length: Math.ceil(items.length / size) }, (_, b) => items.slice(b * size, (b + 1) * size)),
    (batch) => Effect.forEach(batch, f, { concurrency: "unbounded", discard: true }),
    { discard: true }
  )

/**
 * How long `program` takes in virtual time. It runs in a fiber of its own: providing
 * `TestContext` to an effect leaves the `TestClock` in place for the rest of the fiber that ran
 * it (effect 3.22), and the rest of this example runs in real time.
 */
const makespan = (program: Effect.Effect<unknown>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Effect.zipRight(program, Clock.currentTimeMillis))
    yield* TestClock.adjust(latencies.reduce((sum, l) => sum + l, 0))
    return yield* Fiber.join(fiber)
  }).pipe(Effect.provide(TestContext.TestContext), Effect.fork, Effect.flatMap(Fiber.await), Effect.flatten)

const program = Effect.gen(function*() {
  const total = latencies.reduce((sum, l) => sum + l, 0)
  const lowerBound = Math.max(Math.ceil(total / concurrency), ...latencies)
  const batched = yield* makespan(batchProcess(latencies, call, concurrency))
  const sliding = yield* makespan(Parallel.settle(latencies, call, { concurrency }))
  yield* Console.log(`${latencies.length} calls, exponential latencies (mean ${(total / latencies.length).toFixed(1)} ms), ${concurrency} at a time:`)
  yield* Console.log(`  best possible (total / ${concurrency}, or the slowest call): ${lowerBound} ms`)
  yield* Console.log(`  the seed's batchProcess, batch by batch:        ${batched} ms  (${(batched / lowerBound).toFixed(2)}× the best)`)
  yield* Console.log(`  Parallel.settle, a sliding window:              ${sliding} ms  (${(sliding / lowerBound).toFixed(2)}× the best)`)
  yield* Console.log(`  each batch waits for its slowest call; the window starts a call as soon as any ends`)

  // settle: never fails as a whole; every outcome keeps its input index.
  const settled = yield* Parallel.settle(
    ["fine", "broken", "fine too"],
    (prompt, i) => prompt === "broken" ? Effect.fail(`prompt ${i} was refused`) : Effect.succeed(prompt.toUpperCase()),
    { concurrency: 2 }
  )
  yield* Console.log(`settle: successes ${JSON.stringify(settled.successes.map((s) => [s.index, s.value]))}`)
  yield* Console.log(`        failures  ${JSON.stringify(settled.failures.map((f) => [f.index, Option.getOrNull(f.error)]))}`)

  // all: the first failure interrupts the calls still running; their finalizers have run when it fails.
  const stopped: Array<number> = []
  const failed = yield* Effect.flip(
    Parallel.all(
      [50, 5, 50, 50],
      (latency, i) =>
        (i === 1 ? Effect.zipRight(Effect.sleep(latency), Effect.fail(`call ${i} failed`)) : Effect.sleep(latency)).pipe(
          Effect.onInterrupt(() => Effect.sync(() => stopped.push(i)))
        ),
      { concurrency: "unbounded" }
    )
  )
  yield* Console.log(`all: ${failed}; calls ${stopped.sort().join(", ")} were interrupted and had stopped before all returned`)
})

program.pipe(NodeRuntime.runMain)
