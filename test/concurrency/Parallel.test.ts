import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Effect, Exit, FastCheck as fc, Fiber, Option, TestClock } from "effect"
import * as Parallel from "../../src/concurrency/Parallel.js"

interface Item {
  readonly latency: number
  readonly outcome: "succeed" | "fail" | "die"
}

const items = fc.array(
  fc.record({
    latency: fc.integer({ min: 0, max: 100 }),
    outcome: fc.constantFrom<Item["outcome"]>("succeed", "succeed", "fail", "die")
  }),
  { maxLength: 30 }
)

const run = (item: Item, index: number) =>
  Effect.zipRight(
    Effect.sleep(item.latency),
    item.outcome === "succeed" ? Effect.succeed(index * 10) : item.outcome === "fail" ? Effect.fail(`e${index}`) : Effect.die(`bug ${index}`)
  )

describe("Parallel", () => {
  it.effect.prop(
    "settle: every outcome keeps its input index, and settle itself never fails",
    { items, concurrency: fc.integer({ min: 1, max: 10 }) },
    ({ concurrency, items }) =>
      Effect.gen(function*() {
        const fiber = yield* Effect.fork(Parallel.settle(items, run, { concurrency }))
        yield* TestClock.adjust(items.reduce((sum, item) => sum + item.latency, 0))
        const settled = yield* Fiber.join(fiber)
        expect(settled.outcomes.map((o) => o.index)).toEqual(items.map((_, i) => i))
        expect(settled.successes.map((s) => [s.index, s.value])).toEqual(
          items.flatMap((item, i) => item.outcome === "succeed" ? [[i, i * 10]] : [])
        )
        expect(settled.failures.map((f) => [f.index, Option.getOrNull(f.error)])).toEqual(
          items.flatMap((item, i) => item.outcome === "succeed" ? [] : [[i, item.outcome === "fail" ? `e${i}` : null]])
        )
        for (const failure of settled.failures) {
          if (items[failure.index]!.outcome === "die") expect(Cause.isDie(failure.cause)).toBe(true)
        }
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect("settle runs a sliding window: a new call starts as soon as any call ends (seed bug 3)", () =>
    Effect.gen(function*() {
      const starts: Array<number> = []
      const latencies = [100, 10, 10, 10, 10]
      const fiber = yield* Effect.fork(
        Parallel.settle(latencies, (latency) =>
          Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.zipRight(Effect.sync(() => starts.push(t)), Effect.sleep(latency))), {
          concurrency: 2
        })
      )
      yield* TestClock.adjust(100)
      yield* Fiber.join(fiber)
      // batches of two would start the third call at 100 ms, when the slow first one ends
      expect(starts).toEqual([0, 0, 10, 20, 30])
    }))

  it.effect("seed bug 2: all fails fast, interrupts the calls still running, and their finalizers have run when it fails", () =>
    Effect.gen(function*() {
      const finalized: Array<number> = []
      const started: Array<number> = []
      const call = (latency: number, index: number) =>
        Effect.suspend(() => {
          started.push(index)
          return index === 1 ? Effect.zipRight(Effect.sleep(latency), Effect.fail(`e${index}`)) : Effect.as(Effect.sleep(latency), index)
        }).pipe(Effect.ensuring(Effect.sync(() => finalized.push(index))))
      const fiber = yield* Effect.fork(Parallel.all([1000, 10, 1000, 1000, 1000], call, { concurrency: 3 }))
      yield* TestClock.adjust(10)
      const exit = yield* Fiber.await(fiber)
      expect(Exit.isFailure(exit) && Cause.failureOption(exit.cause)).toEqual(Option.some("e1"))
      // 0 and 2 were running: interrupted, and finalized before `all` failed; 3 and 4 never started
      expect(started.sort()).toEqual([0, 1, 2])
      expect(finalized.sort()).toEqual([0, 1, 2])
    }))

  it.effect("all returns the values in input order", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Parallel.all([30, 10, 20], (latency, i) => Effect.as(Effect.sleep(latency), i), { concurrency: "unbounded" }))
      yield* TestClock.adjust(30)
      expect(yield* Fiber.join(fiber)).toEqual([0, 1, 2])
    }))

  it.effect("interrupting settle interrupts the calls still running", () =>
    Effect.gen(function*() {
      let interrupted = 0
      const fiber = yield* Effect.fork(
        Parallel.settle([1, 2, 3], () => Effect.onInterrupt(Effect.never, () => Effect.sync(() => interrupted++)), {
          concurrency: 2
        })
      )
      yield* TestClock.adjust(0)
      yield* Fiber.interrupt(fiber)
      expect(interrupted).toBe(2)
    }))
})
