import { describe, expect, it } from "@effect/vitest"
import { Chunk, Clock, Duration, Effect, FastCheck as fc, Fiber, TestClock } from "effect"
import { durationUntil, sleepUntil } from "../../src/internal/sleepUntil.js"
import { noSpin } from "../support/spinGuard.js"

/** A Clock time in ms: fractional, from 0 up to an epoch-sized instant (whose ulp is ~0.24 µs). */
const instant = fc.oneof(
  fc.double({ min: 0, max: 1e7, noNaN: true }),
  fc.double({ min: 1.6e12, max: 1.8e12, noNaN: true })
)
/** How far ahead: from a fraction of a nanosecond to a day. */
const gap = fc.oneof(fc.double({ min: 1e-9, max: 1e-3, noNaN: true }), fc.double({ min: 1e-3, max: 8.64e7, noNaN: true }))

describe("sleepUntil", () => {
  it.prop(
    "issue 17.1: durationUntil ends at or after any fractional moment, always moves the clock, and is exact when it can be",
    [instant, gap],
    ([now, ahead]) => {
      const at = now + ahead
      const millis = Duration.toMillis(durationUntil(now, at))
      expect(now + millis).toBeGreaterThanOrEqual(at)
      expect(now + millis).toBeGreaterThan(now)
      // no longer than needed: the nearest nanosecond, or the next step that reaches `at`
      if (at > now) {
        const nearest = Math.max(1, Math.round((at - now) * 1e6)) / 1e6
        expect(millis === nearest || now + nearest < at).toBe(true)
      }
      // at or before `now` (float error): still the shortest sleep that moves the clock, never zero
      expect(now + Duration.toMillis(durationUntil(now, now - ahead)) > now).toBe(true)
    }
  )

  it.prop(
    "issue 17.1: read from another time line (a floored nanosecond one), the sleep still moves the clock's own instant",
    [instant, fc.double({ min: 0, max: 1e-3, noNaN: true }), gap],
    ([clockInstant, behind, ahead]) => {
      const now = clockInstant - behind
      const millis = Duration.toMillis(durationUntil(now, now + ahead, clockInstant))
      expect(now + millis).toBeGreaterThanOrEqual(now + ahead)
      expect(clockInstant + millis).toBeGreaterThan(clockInstant)
    }
  )

  it("issue 17.1: durationUntil: whole milliseconds stay whole; infinite stays infinite", () => {
    expect(durationUntil(1000, 6000)).toStrictEqual(Duration.millis(5000))
    expect(Duration.toMillis(durationUntil(0, 1.1))).toBe(1.1)
    expect(durationUntil(5, Infinity)).toStrictEqual(Duration.infinity)
  })

  it.effect.prop(
    "issue 17.1: sleepUntil under TestClock wakes at the first instant at or after any fractional moment, without spinning",
    { start: instant, ahead: gap, early: fc.double({ min: 1e-7, max: 1, noNaN: true }) },
    ({ ahead, early, start }) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(start)
        const at = start + ahead
        const fiber = yield* Effect.fork(Effect.zipRight(sleepUntil(at), Clock.currentTimeMillis))
        yield* TestClock.adjust(0)
        const sleeps = Chunk.toReadonlyArray(yield* TestClock.sleeps())
        if (!(at > start)) {
          // `at` is `start` in floating point: nothing to wait for
          expect(sleeps).toStrictEqual([])
          expect(yield* Fiber.join(fiber)).toBe(start)
          return
        }
        // one sleep, ending at `at` or the next nanosecond (or ulp of the instant) after it
        expect(sleeps).toHaveLength(1)
        const wake = sleeps[0]!
        expect(wake).toBeGreaterThanOrEqual(at)
        expect(wake - at).toBeLessThanOrEqual(Math.max(1e-6, 4 * at * Number.EPSILON))
        // a moment before `at`: still asleep
        const before = at - early * ahead
        if (before > start && before < at) {
          yield* TestClock.setTime(before)
          expect(fiber.unsafePoll()).toBeNull()
        }
        yield* TestClock.setTime(wake)
        expect(yield* Fiber.join(fiber)).toBe(wake)
      }).pipe(noSpin(1000)),
    { fastCheck: { numRuns: 25 } }
  )
})
