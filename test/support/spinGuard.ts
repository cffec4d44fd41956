/**
 * A guard against a wait loop that spins under `TestClock`. A sleep that would not move the
 * test clock (a zero duration, or one too short to change its instant) returns at once; a loop
 * that keeps making such sleeps never suspends, so `TestClock.adjust` never returns, and since
 * each turn forks fibers that Effect's scheduler runs as microtasks, Node's event loop never
 * gets a turn: no timer fires, not vitest's timeout nor a live `Effect.timeout`. So the guard
 * counts those sleeps instead, on a `Clock` that wraps the test clock, and dies after
 * `maxImmediate` of them: a regression fails with a message instead of burning a core forever.
 */
import { Cause, Deferred, Duration, Effect, Exit, FastCheck as fc } from "effect"

/**
 * Runs `self` with the guarded clock. Once `maxImmediate` sleeps have returned at once, every
 * sleep dies, so no fiber of the test goes on spinning, and `self` fails with the count (even
 * when what spun was a fiber it only waits on).
 */
export const noSpin = (maxImmediate = 10_000) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.clockWith((clock) =>
    Effect.flatMap(Deferred.make<never>(), (tripped) => {
      let immediate = 0
      const sleep = (duration: Duration.Duration): Effect.Effect<void> =>
        Effect.suspend(() => {
          const now = clock.unsafeCurrentTimeMillis()
          if (!(now + Duration.toMillis(duration) > now)) immediate++
          if (immediate <= maxImmediate) return clock.sleep(duration)
          const spun = Cause.die(new Error(`spin: ${immediate} sleeps returned at once without moving the clock (now ${now} ms)`))
          Deferred.unsafeDone(tripped, Exit.failCause(spun))
          return Effect.failCause(spun)
        })
      // Everything else is the test clock's own (`TestClock.adjust` finds it as the Clock).
      const guarded = new Proxy(clock, {
        get: (target, key) => {
          if (key === "sleep") return sleep
          const value: unknown = Reflect.get(target, key, target)
          return typeof value === "function" ? value.bind(target) : value
        }
      })
      return Effect.raceFirst(Effect.withClock(self, guarded), Deferred.await(tripped))
    })
  )

/**
 * Fractional milliseconds spread over `[min, max)`, none of them on the nanosecond grid but by
 * chance (`fc.double` favours round values and the bounds, where nothing rounds).
 */
export const fractional = (min: number, max: number): fc.Arbitrary<number> =>
  fc.integer({ min: 1, max: 1e9 }).map((n) => min + (max - min) * ((n * 0.6180339887498949) % 1))
