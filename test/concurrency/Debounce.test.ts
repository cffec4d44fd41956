import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, FastCheck as fc, Fiber, TestClock } from "effect"
import * as Debounce from "../../src/concurrency/Debounce.js"
import { fractional, noSpin } from "../support/spinGuard.js"

/** Lets every forked fiber run until it is suspended. */
const settle = TestClock.adjust(0)

interface Expected {
  /** For each call, the call whose arguments its run used. */
  readonly answers: Array<number>
  /** Each run: when it started and the call whose arguments it used. */
  readonly runs: Array<{ at: number; args: number }>
}

/** Debounce by hand: a window opens at a call, each call moves its deadline, it runs at the deadline. */
const expected = (times: ReadonlyArray<number>, delay: number, maxWait: number): Expected => {
  const answers: Array<number> = []
  const runs: Array<{ at: number; args: number }> = []
  let window: { first: number; due: number; members: Array<number> } | undefined
  const close = () => {
    if (window === undefined) return
    const last = window.members[window.members.length - 1]!
    for (const member of window.members) answers[member] = last
    runs.push({ at: window.due, args: last })
    window = undefined
  }
  times.forEach((t, i) => {
    if (window !== undefined && window.due <= t) close()
    if (window === undefined) window = { first: t, due: Math.min(t + delay, t + maxWait), members: [i] }
    else {
      window.members.push(i)
      window.due = Math.min(t + delay, window.first + maxWait)
    }
  })
  close()
  return { answers, runs }
}

// Calls at even ms, delays and maxWaits odd: a call never arrives at the very instant a window runs.
const scenario = fc.record({
  gaps: fc.array(fc.integer({ min: 0, max: 20 }).map((n) => 2 * n), { minLength: 1, maxLength: 30 }),
  delay: fc.integer({ min: 0, max: 10 }).map((n) => 2 * n + 1),
  maxWait: fc.option(fc.integer({ min: 0, max: 30 }).map((n) => 2 * n + 1), { nil: undefined }),
  latency: fc.integer({ min: 0, max: 30 })
})

describe("Debounce", () => {
  it.effect.prop(
    "one run per quiet window, with the last call's arguments, at the window's deadline; every caller gets its run's answer",
    { scenario },
    ({ scenario: { delay, gaps, latency, maxWait } }) =>
      Effect.gen(function*() {
        const runs: Array<{ at: number; args: number }> = []
        const debounced = yield* Debounce.make(
          (args: number) =>
            Effect.flatMap(Clock.currentTimeMillis, (at) => {
              runs.push({ at, args })
              return Effect.as(Effect.sleep(latency), args)
            }),
          maxWait === undefined ? { delay } : { delay, maxWait }
        )
        const times = gaps.reduce<Array<number>>((acc, gap) => [...acc, (acc[acc.length - 1] ?? 0) + gap], [])
        const fibers: Array<Fiber.RuntimeFiber<number>> = []
        let now = 0
        for (const [i, t] of times.entries()) {
          yield* TestClock.adjust(t - now)
          now = t
          fibers.push(yield* Effect.fork(debounced(i)))
          yield* settle
        }
        yield* TestClock.adjust(delay + latency + 1)
        const answers = yield* Effect.forEach(fibers, Fiber.join)
        const want = expected(times, delay, maxWait ?? Infinity)
        expect(answers).toEqual(want.answers)
        expect(runs).toEqual(want.runs)
      }),
    { fastCheck: { numRuns: 25 } }
  )

  it.effect("runs with the latest arguments (the seed's used the first call's)", () =>
    Effect.gen(function*() {
      const debounced = yield* Debounce.make((draft: string) => Effect.succeed(`ran with ${draft}`), { delay: "100 millis" })
      const a = yield* Effect.fork(debounced("S"))
      yield* TestClock.adjust(50)
      const b = yield* Effect.fork(debounced("Su"))
      yield* TestClock.adjust(50)
      const c = yield* Effect.fork(debounced("Sum"))
      yield* TestClock.adjust(99)
      expect((yield* Fiber.poll(a))._tag).toBe("None")
      yield* TestClock.adjust(1)
      expect(yield* Effect.forEach([a, b, c], Fiber.join)).toEqual(["ran with Sum", "ran with Sum", "ran with Sum"])
    }))

  it.effect("seed bug 10: every caller gets the failure, and the next call runs again (the seed hung forever)", () =>
    Effect.gen(function*() {
      let runs = 0
      const debounced = yield* Debounce.make(
        (n: number) => Effect.suspend(() => ++runs === 1 ? Effect.fail(`failed at ${n}`) : Effect.succeed(n)),
        { delay: 10 }
      )
      const first = yield* Effect.fork(Effect.all([Effect.flip(debounced(1)), Effect.flip(debounced(2))], { concurrency: "unbounded" }))
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(first)).toEqual(["failed at 2", "failed at 2"])
      const next = yield* Effect.fork(debounced(3))
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(next)).toBe(3)
      expect(runs).toBe(2)
    }))

  it.effect("maxWait bounds the delay: a steady stream of calls still runs", () =>
    Effect.gen(function*() {
      const runs: Array<number> = []
      const debounced = yield* Debounce.make(
        (n: number) => Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => (runs.push(t), n))),
        { delay: "100 millis", maxWait: "250 millis" }
      )
      // a call every 50 ms for a second: without maxWait, nothing would run until it stops
      const fibers: Array<Fiber.RuntimeFiber<number>> = []
      for (let t = 0; t < 1000; t += 50) {
        fibers.push(yield* Effect.fork(debounced(t)))
        yield* TestClock.adjust(50)
      }
      yield* TestClock.adjust(100)
      // a window opens at 0, 250, 500 and 750 and runs 250 ms later (the call arriving as one
      // runs opens the next)
      expect(runs).toEqual([250, 500, 750, 1000])
      const answers = yield* Effect.forEach(fibers, Fiber.join)
      // each caller gets its window's answer: the last call before the run
      expect(answers).toEqual([200, 450, 700, 950].flatMap((last) => Array(5).fill(last)))
    }))

  it.effect("interrupting one caller does not cancel the run for the others", () =>
    Effect.gen(function*() {
      let runs = 0
      const debounced = yield* Debounce.make((n: number) => Effect.sync(() => (runs++, n)), { delay: 10 })
      const a = yield* Effect.fork(debounced(1))
      const b = yield* Effect.fork(debounced(2))
      yield* settle
      yield* Fiber.interrupt(a)
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(b)).toBe(2)
      expect(runs).toBe(1)
    }))

  it.effect("when every caller of a window leaves, it never runs, and the next call opens a new window", () =>
    Effect.gen(function*() {
      const ran: Array<number> = []
      const debounced = yield* Debounce.make((n: number) => Effect.sync(() => (ran.push(n), n)), { delay: 10 })
      const a = yield* Effect.fork(debounced(1))
      const b = yield* Effect.fork(debounced(2))
      yield* settle
      yield* Fiber.interrupt(a)
      yield* Fiber.interrupt(b)
      yield* TestClock.adjust(20)
      expect(ran).toEqual([])
      const c = yield* Effect.fork(debounced(3))
      yield* TestClock.adjust(9)
      expect(ran).toEqual([])
      yield* TestClock.adjust(1)
      expect(yield* Fiber.join(c)).toBe(3)
    }))

  it.effect("a run under way is interrupted when its last caller leaves", () =>
    Effect.gen(function*() {
      let interrupted = false
      const debounced = yield* Debounce.make(
        (_: number) => Effect.onInterrupt(Effect.never, () => Effect.sync(() => (interrupted = true))),
        { delay: 10 }
      )
      const a = yield* Effect.fork(debounced(1))
      yield* TestClock.adjust(10)
      expect(interrupted).toBe(false)
      yield* Fiber.interrupt(a)
      expect(interrupted).toBe(true)
    }))

  it.effect.prop(
    "issue 17.1: with fractional delays and call times, a window runs once, at or just after its due moment, without spinning",
    {
      first: fractional(0, 1e7),
      delay: fractional(1e-6, 1e5),
      // the second call, as a fraction of the delay after the first
      into: fractional(0, 1)
    },
    ({ delay, first, into }) =>
      Effect.gen(function*() {
        const runs: Array<number> = []
        const debounced = yield* Debounce.make(
          (n: number) => Effect.map(Clock.currentTimeMillis, (now) => (runs.push(now), n)),
          { delay: Duration.millis(delay) }
        )
        const millis = Duration.toMillis(Duration.millis(delay))
        yield* TestClock.setTime(first)
        const a = yield* Effect.fork(debounced(1))
        yield* settle
        const second = first + into * millis
        yield* TestClock.setTime(second)
        const b = yield* Effect.fork(debounced(2))
        yield* settle
        const due = Math.max(first, second) + millis
        yield* TestClock.setTime(due + 1e-3)
        expect([yield* Fiber.join(a), yield* Fiber.join(b)]).toStrictEqual([2, 2])
        expect(runs).toHaveLength(1)
        expect(runs[0]).toBeGreaterThanOrEqual(due)
        expect(runs[0]! - due).toBeLessThanOrEqual(1e-6)
      }).pipe(noSpin(1000)),
    { fastCheck: { numRuns: 25 } }
  )
})
