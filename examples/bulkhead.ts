/**
 * Bulkhead: many callers on few permits, served in strict arrival order. A caller that needs
 * more permits is never overtaken by later callers that need fewer (no barging, no starvation).
 * With `maxQueued`, a full queue fails a caller at once with `BulkheadFull`.
 *
 *   npx tsx examples/bulkhead.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Effect } from "effect"
import { Bulkhead } from "../src/index.js"

const program = Effect.gen(function*() {
  const bulkhead = yield* Bulkhead.make({ permits: 2 })
  const start = yield* Clock.currentTimeMillis
  const log = (line: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (t) => Console.log(`  ${String(t - start).padStart(3)} ms  ${line}`))

  // Eight callers arrive in this order; C is a big request that needs both permits.
  const callers = [
    { name: "A", permits: 1, millis: 30 },
    { name: "B", permits: 1, millis: 60 },
    { name: "C", permits: 2, millis: 40 },
    { name: "D", permits: 1, millis: 40 },
    { name: "E", permits: 1, millis: 40 },
    { name: "F", permits: 1, millis: 40 },
    { name: "G", permits: 1, millis: 40 },
    { name: "H", permits: 1, millis: 40 }
  ]
  yield* Console.log("2 permits, 8 callers A..H; C needs both permits:")
  const fibers = yield* Effect.forEach(callers, ({ millis, name, permits }) =>
    Effect.fork(
      bulkhead.withPermits(permits)(
        Effect.zipRight(log(`${name} starts (${permits} permit${permits > 1 ? "s" : ""}, ${millis} ms)`), Effect.sleep(millis))
      )
    ))
  yield* Effect.sleep("10 millis")
  yield* log(`${yield* bulkhead.available} permits free, ${yield* bulkhead.waiting} callers waiting`)
  // At 30 ms A frees a permit, but C (next in line) needs two: D waits behind C rather than
  // barging past it, so C starts at 60 ms when B is done.
  yield* Effect.forEach(fibers, (fiber) => fiber.await)
  yield* log(`all done; ${yield* bulkhead.available} permits free, ${yield* bulkhead.waiting} waiting`)

  // Many callers: 1,000 fibers on 3 permits. Each waiter is resumed exactly once, in order
  // (Effect's Semaphore wakes every waiter on each release, which costs ms per call here).
  const three = yield* Bulkhead.make({ permits: 3 })
  const served: Array<number> = []
  let inFlight = 0
  let maxInFlight = 0
  const began = yield* Clock.currentTimeMillis
  yield* Effect.forEach(Array.from({ length: 1000 }, (_, i) => i), (i) =>
    three.withPermit(Effect.suspend(() => {
      served.push(i)
      maxInFlight = Math.max(maxInFlight, ++inFlight)
      return Effect.ensuring(Effect.yieldNow(), Effect.sync(() => inFlight--))
    })), { concurrency: "unbounded", discard: true })
  const took = (yield* Clock.currentTimeMillis) - began
  const inOrder = served.every((n, i) => n === i)
  yield* Console.log(`1,000 callers on 3 permits: served in arrival order: ${inOrder}, at most ${maxInFlight} at once, ${took} ms`)

  // A bounded queue sheds load: with 2 permits and room for 3 waiting, the 6th caller fails at
  // once with BulkheadFull instead of joining an ever-longer queue.
  const bounded = yield* Bulkhead.make({ permits: 2, maxQueued: 3 })
  const outcomes = yield* Effect.forEach(["A", "B", "C", "D", "E", "F"], (name) =>
    Effect.fork(Effect.as(bounded.withPermit(Effect.sleep("20 millis")), `${name} ran`).pipe(
      Effect.catchTag("BulkheadFull", (full) => Effect.succeed(`${name}: ${full.message}`))
    )))
  yield* Effect.sleep("5 millis")
  const stats = yield* bounded.stats
  yield* Console.log(`bounded queue: ${stats.active} running, ${stats.queued} waiting (at most ${stats.maxQueued})`)
  for (const fiber of outcomes) yield* Console.log(`  ${yield* fiber.await.pipe(Effect.flatten)}`)
})

program.pipe(NodeRuntime.runMain)
