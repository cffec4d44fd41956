import { describe, expect, it } from "@effect/vitest"
import { Cache, Effect, Either, Exit, FastCheck as fc, Fiber, Metric, TestClock } from "effect"
import * as Memo from "../../src/concurrency/Memo.js"

/** Lets every forked fiber run until it is suspended. */
const settle = TestClock.adjust(0)

describe("Memo", () => {
  it.effect("nothing is computed until a key is asked for, then once", () =>
    Effect.gen(function*() {
      const computed: Array<string> = []
      const memo = yield* Memo.make({ lookup: (key: string) => Effect.sync(() => (computed.push(key), key.length)) })
      expect(computed).toEqual([])
      expect(yield* memo.get("abc")).toBe(3)
      expect(yield* memo.get("abc")).toBe(3)
      expect(computed).toEqual(["abc"])
      expect(yield* memo.stats).toEqual({ hits: 1, misses: 1, evictions: 0, size: 1 })
      // getEither says where the value came from
      expect(yield* memo.getEither("abc")).toEqual(Either.left(3))
      expect(yield* memo.getEither("de")).toEqual(Either.right(2))
    }))

  it.effect("seed bug 8: a failure is not kept; its waiters all get it and the next call computes again", () =>
    Effect.gen(function*() {
      let calls = 0
      const memo = yield* Memo.make({
        lookup: (key: string) =>
          Effect.suspend(() => ++calls === 1 ? Effect.zipRight(Effect.sleep(10), Effect.fail(`no ${key}`)) : Effect.succeed(calls))
      })
      const waiters = yield* Effect.fork(
        Effect.all([Effect.flip(memo.get("k")), Effect.flip(memo.get("k"))], { concurrency: "unbounded" })
      )
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(waiters)).toEqual(["no k", "no k"])
      expect(calls).toBe(1)
      // at the very instant it failed (the seed's LazyAIProcessor returned the rejection forever)
      expect(yield* memo.get("k")).toBe(2)
      expect(yield* memo.get("k")).toBe(2)
      expect(calls).toBe(2)
    }))

  it.effect.prop(
    "a value lives exactly `timeToLive` from when it was computed (TestClock)",
    { ttl: fc.integer({ min: 1, max: 1000 }), latency: fc.integer({ min: 0, max: 100 }), at: fc.integer({ min: 0, max: 1200 }) },
    ({ at, latency, ttl }) =>
      Effect.gen(function*() {
        let calls = 0
        const memo = yield* Memo.make({
          lookup: (_: string) => Effect.as(Effect.sleep(latency), ++calls),
          timeToLive: ttl
        })
        const first = yield* Effect.fork(memo.get("k"))
        yield* TestClock.adjust(latency)
        expect(yield* Fiber.join(first)).toBe(1)
        // `at` ms after the value was computed
        yield* TestClock.adjust(at)
        const again = yield* Effect.fork(memo.get("k"))
        yield* TestClock.adjust(latency)
        expect(yield* Fiber.join(again)).toBe(at <= ttl ? 1 : 2)
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect.prop(
    "never more than `capacity` values; every value dropped for room is counted as an eviction",
    {
      capacity: fc.integer({ min: 1, max: 5 }),
      // a key to get, or (negative) a key to invalidate first
      ops: fc.array(fc.integer({ min: -9, max: 9 }), { minLength: 1, maxLength: 60 })
    },
    ({ capacity, ops }) =>
      Effect.gen(function*() {
        let calls = 0
        let invalidated = 0
        const memo = yield* Memo.make({ lookup: (key: number) => Effect.sync(() => (calls++, key * 10)), capacity })
        for (const op of ops) {
          if (op < 0) {
            const before = (yield* memo.stats).size
            yield* memo.invalidate(-op)
            invalidated += before - (yield* memo.stats).size
            continue
          }
          expect(yield* memo.get(op)).toBe(op * 10)
          expect((yield* memo.stats).size).toBeLessThanOrEqual(capacity)
        }
        const stats = yield* memo.stats
        expect(stats.hits + stats.misses).toBe(ops.filter((op) => op >= 0).length)
        expect(stats.misses).toBe(calls)
        // each computed value is still stored, was invalidated, or was evicted
        expect(stats.evictions).toBe(calls - stats.size - invalidated)
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect("when full, the least recently used value goes", () =>
    Effect.gen(function*() {
      const computed: Array<string> = []
      const memo = yield* Memo.make({ lookup: (key: string) => Effect.sync(() => (computed.push(key), key)), capacity: 2 })
      for (const key of ["a", "b", "a", "c", "a", "b"]) yield* memo.get(key)
      // at `c`, `b` is the least recently used; at the second `b`, `c` is
      expect(computed).toEqual(["a", "b", "c", "b"])
      expect(yield* memo.stats).toEqual({ hits: 2, misses: 4, evictions: 2, size: 2 })
    }))

  it.effect("why not Cache.get: it evicts by insertion order, even a value just used (effect 3.22)", () =>
    Effect.gen(function*() {
      const cache = yield* Cache.make({ capacity: 2, timeToLive: "1 hour", lookup: (key: string) => Effect.succeed(key) })
      for (const key of ["a", "b", "a", "c"]) yield* cache.get(key)
      // a least-recently-used cache would keep `a` and `c`; if this fails, Effect fixed it
      expect((yield* cache.keys).sort()).toEqual(["b", "c"])
    }))

  it.effect("why not Cache.get: interrupting the first caller interrupts every other waiter (effect 3.22)", () =>
    Effect.gen(function*() {
      const cache = yield* Cache.make({ capacity: 2, timeToLive: "1 hour", lookup: (_: string) => Effect.as(Effect.sleep(10), "v") })
      const first = yield* Effect.fork(cache.get("k"))
      yield* settle
      const second = yield* Effect.fork(cache.get("k"))
      yield* settle
      yield* Fiber.interrupt(first)
      yield* TestClock.adjust(10)
      // the second caller was never interrupted, yet it gets an interruption
      const exit = yield* Fiber.await(second)
      expect(Exit.isInterrupted(exit)).toBe(true)
    }))

  it.effect("interrupting the first caller does not poison the entry (Effect's Cache alone interrupts every waiter)", () =>
    Effect.gen(function*() {
      let calls = 0
      const memo = yield* Memo.make({ lookup: (_: string) => Effect.as(Effect.sleep(10), ++calls) })
      const first = yield* Effect.fork(memo.get("k"))
      yield* settle
      const second = yield* Effect.fork(memo.get("k"))
      yield* settle
      yield* Fiber.interrupt(first)
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(second)).toBe(1)
      expect(yield* memo.get("k")).toBe(1)
      expect(calls).toBe(1)
    }))

  it.effect("when every caller leaves, the computation is interrupted and nothing is stored", () =>
    Effect.gen(function*() {
      let calls = 0
      let interrupted = 0
      const memo = yield* Memo.make({
        lookup: (_: string) =>
          Effect.as(Effect.sleep(10), ++calls).pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted++)))
      })
      const a = yield* Effect.fork(memo.get("k"))
      const b = yield* Effect.fork(memo.get("k"))
      yield* settle
      yield* Fiber.interrupt(a)
      expect(interrupted).toBe(0)
      yield* Fiber.interrupt(b)
      expect(interrupted).toBe(1)
      expect((yield* memo.stats).size).toBe(0)
      const c = yield* Effect.fork(memo.get("k"))
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(c)).toBe(2)
    }))

  it.effect("hits, misses and evictions are readable as metrics tagged with the memo's name", () =>
    Effect.gen(function*() {
      const memo = yield* Memo.make({ name: "metrics-test", lookup: (key: number) => Effect.succeed(key), capacity: 1 })
      yield* memo.get(1)
      yield* memo.get(1)
      yield* memo.get(2)
      const value = (metric: Metric.Metric.Counter<number>) => Effect.map(Metric.value(Metric.tagged(metric, "memo", "metrics-test")), (s) => s.count)
      expect(yield* value(Memo.metrics.hits)).toBe(1)
      expect(yield* value(Memo.metrics.misses)).toBe(2)
      expect(yield* value(Memo.metrics.evictions)).toBe(1)
    }))

  it.effect("invalidate forgets a value; a defect in the lookup is not kept either", () =>
    Effect.gen(function*() {
      let calls = 0
      const memo = yield* Memo.make({
        lookup: (_: string) => Effect.suspend(() => ++calls === 2 ? Effect.die("bug") : Effect.succeed(calls))
      })
      expect(yield* memo.get("k")).toBe(1)
      yield* memo.invalidate("k")
      expect(Exit.isFailure(yield* Effect.exit(memo.get("k")))).toBe(true)
      expect(yield* memo.get("k")).toBe(3)
      yield* memo.invalidateAll
      expect(yield* memo.get("k")).toBe(4)
    }))

  it.effect("a capacity that is not a positive integer is a defect", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Memo.make({ lookup: (_: string) => Effect.void, capacity: 0 }))
      expect(Exit.isFailure(exit)).toBe(true)
    }))
})
