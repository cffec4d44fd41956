import { describe, expect, it } from "@effect/vitest"
import { Chunk, Clock, Effect, Exit, FastCheck as fc, Fiber, Stream, TestClock } from "effect"
import * as AdaptiveLimit from "../../src/concurrency/AdaptiveLimit.js"
import * as AiModel from "../../src/model/AiModel.js"
import { interruptedWaiterScenario } from "./interruptedWaiter.js"

/** Lets every forked fiber run until it is suspended. */
const settle = TestClock.adjust(0)

/**
 * A provider that serves `capacity.value` calls at full speed (`base` ms each) and slows every
 * call admitted beyond that in proportion to the load, like a saturated server: n in flight
 * take `base × n / capacity`. With `overloadAt`, a call beyond `overloadAt × capacity` is
 * refused at once with `Overloaded`.
 */
const scriptedProvider = (capacity: { value: number }, base: number, overloadAt = Infinity) => {
  let running = 0
  const call = Effect.suspend(() => {
    if (running + 1 > overloadAt * capacity.value) return Effect.fail(new AiModel.Overloaded({ model: "scripted" }))
    running++
    return Effect.ensuring(
      Effect.sleep(base * Math.max(1, running / capacity.value)),
      Effect.sync(() => {
        running--
      })
    )
  })
  return { call, running: () => running }
}

/**
 * `workers` callers, each calling through `limit` again and again until `until` ms; the times
 * at which calls succeeded and failed.
 */
const drive = <E>(limit: AdaptiveLimit.AdaptiveLimit, call: Effect.Effect<void, E>, workers: number, until: number) => {
  const done: Array<number> = []
  const failed: Array<number> = []
  return Effect.as(
    Effect.forEach(
      Array.from({ length: workers }),
      () =>
        Effect.gen(function* () {
          while ((yield* Clock.currentTimeMillis) < until) {
            const exit = yield* Effect.exit(limit.withPermit(call))
            const at = yield* Clock.currentTimeMillis
            if (Exit.isSuccess(exit)) done.push(at)
            else {
              failed.push(at)
              yield* Effect.sleep(100) // a failed call waits a little before the next
            }
          }
        }),
      { concurrency: "unbounded", discard: true }
    ),
    { done, failed }
  )
}

/** Samples the limit every `every` ms from now until `until`. */
const trace = (limit: AdaptiveLimit.AdaptiveLimit, every: number, until: number) =>
  Effect.gen(function* () {
    const points: Array<readonly [number, number]> = []
    while ((yield* Clock.currentTimeMillis) < until) {
      points.push([yield* Clock.currentTimeMillis, yield* limit.limit])
      yield* Effect.sleep(every)
    }
    return points
  })

describe("AdaptiveLimit", () => {
  it.effect("converges on a scripted provider's capacity: grows while latency is flat, settles just above the knee", () =>
    Effect.gen(function* () {
      const capacity = { value: 5 }
      const provider = scriptedProvider(capacity, 1000)
      const limit = yield* AdaptiveLimit.make({ initial: 2, minSamples: 5 })
      const limits = yield* Effect.fork(trace(limit, 1000, 30_000))
      const work = yield* Effect.fork(drive(limit, provider.call, 12, 30_000))
      // callers still queued at 30 s finish their last call after it
      yield* TestClock.adjust("1 minute")
      const { done } = yield* Fiber.join(work)
      const points = yield* Fiber.join(limits)
      // from 10 s on (slow start done), at the knee or one above it: never the slow start's overshoot
      const late = points.filter(([t]) => t >= 10_000).map(([, l]) => l)
      expect(Math.min(...late)).toBeGreaterThanOrEqual(5)
      expect(Math.max(...late)).toBeLessThanOrEqual(6)
      // the provider serves 5 a second at best; slow start from 2 costs the first seconds
      expect(done.length / 30).toBeGreaterThan(0.85 * 5)
    }))

  it.effect("recovers after the capacity halves: back at the new knee within 5 s, and no Overloaded once there", () =>
    Effect.gen(function* () {
      const capacity = { value: 8 }
      const provider = scriptedProvider(capacity, 1000, 2)
      const limit = yield* AdaptiveLimit.make({ initial: 8, minSamples: 5 })
      const limits = yield* Effect.fork(trace(limit, 500, 30_000))
      const work = yield* Effect.fork(drive(limit, provider.call, 20, 30_000))
      yield* TestClock.adjust("15 seconds")
      expect(yield* limit.limit).toBeGreaterThanOrEqual(8)
      capacity.value = 4
      yield* TestClock.adjust("1 minute")
      const { done, failed } = yield* Fiber.join(work)
      expect(failed.filter((at) => at >= 20_000)).toEqual([])
      // 4 a second at best once halved
      expect(done.filter((at) => at >= 20_000 && at < 30_000).length).toBeGreaterThanOrEqual(0.9 * 40)
      const points = yield* Fiber.join(limits)
      const recovered = points.filter(([t]) => t >= 20_000).map(([, l]) => l)
      expect(Math.min(...recovered)).toBeGreaterThanOrEqual(4)
      expect(Math.max(...recovered)).toBeLessThanOrEqual(5)
    }))

  it.effect.prop(
    "never admits a call while as many run as the limit in force, whatever the latencies and drops",
    {
      script: fc.array(fc.record({ latency: fc.integer({ min: 1, max: 500 }), drop: fc.boolean() }), { minLength: 20, maxLength: 120 }),
      callers: fc.integer({ min: 1, max: 30 })
    },
    ({ callers, script }) =>
      Effect.gen(function* () {
        const limit = yield* AdaptiveLimit.make({ initial: 3, max: 12, minSamples: 2 })
        let running = 0
        let next = 0
        const violations: Array<string> = []
        // The limit a call was let in under is one the limiter held at that instant: the
        // highest read at this instant, at any call's start or end (where it changes).
        let instant = -1
        let highest = 0
        const observe = Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const current = yield* limit.limit
          if (now !== instant) {
            instant = now
            highest = current
          } else highest = Math.max(highest, current)
        })
        const call = Effect.gen(function* () {
          const step = script[next++ % script.length]!
          yield* observe
          if (running >= highest) violations.push(`${running} running at limit ${highest}`)
          running++
          yield* Effect.sleep(step.latency)
          running--
          yield* observe
          if (step.drop) return yield* Effect.fail(new AiModel.Overloaded({ model: "m" }))
        })
        const fiber = yield* Effect.fork(Effect.forEach(Array.from({ length: callers }), () =>
          Effect.forEach(Array.from({ length: 4 }), () => Effect.exit(limit.withPermit(call)), { discard: true }), {
          concurrency: "unbounded",
          discard: true
        }))
        yield* TestClock.adjust("1 day")
        yield* Fiber.join(fiber)
        expect(violations).toEqual([])
        const stats = yield* limit.stats
        expect(stats.active).toBe(0)
        expect(stats.queued).toBe(0)
        expect(stats.limit >= 1 && stats.limit <= 12).toBe(true)
      }),
    { fastCheck: { numRuns: 20 } }
  )

  it.effect("after the limit drops, no call starts until fewer than the new limit run", () =>
    Effect.gen(function* () {
      const limit = yield* AdaptiveLimit.make({ initial: 4, backoff: 0.5 })
      const starts: Array<number> = []
      const long = Effect.zipRight(Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => starts.push(t))), Effect.sleep(1000))
      yield* Effect.fork(Effect.forEach(Array.from({ length: 3 }), () => limit.withPermit(long), { concurrency: "unbounded" }))
      yield* Effect.fork(limit.withPermit(Effect.zipRight(Effect.sleep(10), Effect.fail(new AiModel.Overloaded({ model: "m" })))))
      yield* settle
      const waiting = yield* Effect.fork(Effect.forEach(Array.from({ length: 3 }), () => limit.withPermit(long), { concurrency: "unbounded" }))
      yield* TestClock.adjust(10)
      // 4 × 0.5 = 2 while 3 still run: nobody starts until only 1 does
      expect(yield* limit.stats).toMatchObject({ limit: 2, active: 3, queued: 3 })
      yield* TestClock.adjust(990)
      // the three long calls end together at 1000: two may start (limit 2)
      expect(starts).toEqual([0, 0, 0, 1000, 1000])
      yield* TestClock.adjust(2000)
      yield* Fiber.join(waiting)
      expect(starts).toEqual([0, 0, 0, 1000, 1000, 2000])
    }))

  it.effect("a drop (Overloaded, RateLimited, a timeout) shrinks the limit at once, once per round", () =>
    Effect.gen(function* () {
      const limit = yield* AdaptiveLimit.make({ initial: 20, backoff: 0.5 })
      const overloaded = Effect.zipRight(Effect.sleep(100), Effect.fail(new AiModel.Overloaded({ model: "m" })))
      // 20 calls admitted under 20 all fail: one shrink, to 10, not 20 × 0.5^20
      yield* Effect.fork(Effect.forEach(Array.from({ length: 20 }), () => Effect.exit(limit.withPermit(overloaded)), {
        concurrency: "unbounded"
      }))
      yield* TestClock.adjust(100)
      expect(yield* limit.limit).toBe(10)
      // admitted under 10: the next drop halves again
      yield* Effect.exit(Effect.fork(limit.withPermit(overloaded)))
      const rateLimited = Effect.zipRight(Effect.sleep(100), Effect.fail(new AiModel.RateLimited({ model: "m", limit: "tokens" })))
      yield* Effect.fork(limit.withPermit(rateLimited))
      yield* TestClock.adjust(100)
      expect(yield* limit.limit).toBe(5)
      // other failures (a 400) say nothing about load
      const invalid = Effect.zipRight(Effect.sleep(100), Effect.fail(new AiModel.InvalidRequest({ model: "m", reason: "no" })))
      yield* Effect.fork(limit.withPermit(invalid))
      yield* TestClock.adjust(100)
      expect(yield* limit.limit).toBe(5)
    }))

  it.effect("faults at a steady rate whatever the load (a fifth of the calls) do not collapse the limit; a provider shedding most calls still shrinks it", () =>
    Effect.gen(function* () {
      // a provider with flat latency: every fifth call, spread at random, fails Overloaded
      const run = (failing: (n: number) => boolean) =>
        Effect.gen(function* () {
          const limit = yield* AdaptiveLimit.make({ initial: 4, max: 64 })
          let n = 0
          const call = Effect.suspend(() => {
            const failed = failing(n++)
            return Effect.zipRight(Effect.sleep(100), failed ? Effect.fail(new AiModel.Overloaded({ model: "m" })) : Effect.void)
          })
          const caller = Effect.forever(Effect.exit(limit.withPermit(call)))
          const callers = yield* Effect.fork(Effect.forEach(Array.from({ length: 32 }), () => caller, { concurrency: "unbounded", discard: true }))
          // 3 s: 32 callers at 100 ms are ~1,000 TestClock sleeps a second, each costing real time
          yield* TestClock.adjust("3 seconds")
          yield* Fiber.interrupt(callers)
          return yield* limit.limit
        })
      // a fixed pseudo-random fifth: (n × 7919) mod 100 < 20
      expect(yield* run((n) => (n * 7919) % 100 < 20)).toBeGreaterThanOrEqual(16)
      // nine calls in ten shed: the limit goes to its floor
      expect(yield* run((n) => (n * 7919) % 100 < 90)).toBeLessThanOrEqual(4)
    }))

  it.effect("changes streams the limit now and each change; stats read it with the calls active and waiting", () =>
    Effect.gen(function* () {
      const limit = yield* AdaptiveLimit.make({ initial: 4, backoff: 0.5, min: 1 })
      const seen = yield* Effect.fork(Stream.runCollect(Stream.take(limit.changes, 3)))
      yield* settle
      const overloaded = Effect.zipRight(Effect.sleep(10), Effect.fail(new AiModel.Overloaded({ model: "m" })))
      const holder = yield* Effect.fork(limit.withPermit(Effect.sleep("1 hour")))
      yield* Effect.fork(Effect.forEach(Array.from({ length: 5 }), () => Effect.exit(limit.withPermit(overloaded)), {
        concurrency: "unbounded"
      }))
      yield* settle
      expect(yield* limit.stats).toEqual({ limit: 4, active: 4, queued: 2, baselineMillis: undefined })
      yield* TestClock.adjust(10) // 3 drop at once: one shrink to 2; the 2 queued wait for room
      yield* TestClock.adjust(10) // still 2 (the holder, one admitted after the shrink) then its drop: 1
      yield* TestClock.adjust(10)
      expect(Chunk.toArray(yield* Fiber.join(seen))).toEqual([4, 2, 1])
      yield* Fiber.interrupt(holder) // lets the last queued call in
      yield* TestClock.adjust(10)
      expect(yield* limit.stats).toMatchObject({ limit: 1, active: 0, queued: 0 })
    }))

  it.effect("an idle limit does not grow: calls that never fill it say nothing about the provider", () =>
    Effect.gen(function* () {
      const limit = yield* AdaptiveLimit.make({ initial: 8, minSamples: 5 })
      // two callers, one call at a time each: the limit is never in use
      yield* Effect.fork(Effect.forEach(Array.from({ length: 2 }), () =>
        Effect.forEach(Array.from({ length: 50 }), () => limit.withPermit(Effect.sleep(100)), { discard: true }), {
        concurrency: "unbounded"
      }))
      yield* TestClock.adjust("10 seconds")
      expect(yield* limit.limit).toBe(8)
    }))

  it.effect("FIFO: waiters are let in in arrival order; an interrupted waiter leaves the queue and takes no permit", () =>
    Effect.gen(function* () {
      const limit = yield* AdaptiveLimit.make({ initial: 1, min: 1, max: 1 })
      yield* interruptedWaiterScenario(limit.withPermit, Effect.map(limit.stats, (stats) => stats.queued))
      expect(yield* limit.stats).toMatchObject({ active: 0, queued: 0 })
    }))

  it.effect("bounds: never below min nor above max; options out of range are defects", () =>
    Effect.gen(function* () {
      const limit = yield* AdaptiveLimit.make({ initial: 3, min: 3, max: 3, backoff: 0.5 })
      yield* Effect.exit(limit.withPermit(Effect.fail(new AiModel.Overloaded({ model: "m" }))))
      expect(yield* limit.limit).toBe(3)
      for (const options of [{ min: 0 }, { min: 5, max: 4 }, { initial: 0 }, { backoff: 1 }, { tolerance: 0 }]) {
        const exit = yield* Effect.exit(AdaptiveLimit.make(options))
        expect(Exit.isFailure(exit) && exit.cause._tag === "Die").toBe(true)
      }
    }))

  it.effect("issue 17.3: a provider 3× slower for good, whatever the load: the baseline adopts the new normal and the limit comes back", () =>
    Effect.gen(function* () {
      // capacity 8 at 1 s a call; from 15 s on every call takes three times as long
      const capacity = { value: 8 }
      let base = 1000
      const provider = scriptedProvider(capacity, 1000)
      const call = Effect.suspend(() => base === 1000 ? provider.call : Effect.zipRight(provider.call, Effect.sleep(2 * 1000 * Math.max(1, provider.running() / capacity.value))))
      const limit = yield* AdaptiveLimit.make({ initial: 8, minSamples: 5 })
      const limits = yield* Effect.fork(trace(limit, 500, 120_000))
      const work = yield* Effect.fork(drive(limit, call, 20, 120_000))
      yield* TestClock.adjust("15 seconds")
      const before = yield* limit.limit
      base = 3000
      yield* TestClock.adjust("3 minutes")
      const { done } = yield* Fiber.join(work)
      const points = (yield* Fiber.join(limits)).filter(([t]) => t >= 15_000)
      // never pinned at the floor: at most a few seconds below half the knee, then back at it
      expect(points.filter(([, l]) => l < 4).length * 500).toBeLessThanOrEqual(10_000)
      const late = points.filter(([t]) => t >= 60_000).map(([, l]) => l)
      expect(Math.min(...late)).toBeGreaterThanOrEqual(Math.min(before, 8))
      expect((yield* limit.stats).baselineMillis).toBeGreaterThan(2500)
      // the provider serves 8 every 3 s at best once slower: 2.67 a second
      expect(done.filter((at) => at >= 60_000 && at < 120_000).length / 60).toBeGreaterThan(0.85 * 8 / 3)
    }))

  it.effect("issue 17.3: a fifth of the calls failing at once, whatever the load, never pins the limit at its floor", () =>
    Effect.gen(function* () {
      // flat 100 ms answers; every fifth call (spread at random) fails at once: fast failures
      // come back before the successes that started with them
      const limit = yield* AdaptiveLimit.make({ initial: 4, max: 64 })
      let n = 0
      const call = Effect.suspend(() =>
        (n++ * 7919) % 100 < 20 ? Effect.fail(new AiModel.Overloaded({ model: "m" })) : Effect.sleep(100)
      )
      const limits = yield* Effect.fork(trace(limit, 100, 3000))
      const callers = yield* Effect.fork(Effect.forEach(Array.from({ length: 24 }), () => Effect.forever(Effect.exit(limit.withPermit(call))), {
        concurrency: "unbounded",
        discard: true
      }))
      yield* TestClock.adjust("3 seconds")
      yield* Fiber.interrupt(callers)
      const points = yield* Fiber.join(limits)
      expect(points.filter(([, l]) => l === 1)).toEqual([])
      // at every caller within the first second and a half, and there from then on
      expect(Math.min(...points.filter(([t]) => t >= 1500).map(([, l]) => l))).toBeGreaterThanOrEqual(24)
    }))
})
