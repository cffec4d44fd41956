/**
 * A guard against a wait loop that spins under `TestClock`. A sleep that would not move the
 * test clock (a zero duration, or one too short to change its instant) returns at once; a loop
 * that keeps making such sleeps never suspends, so `TestClock.adjust` never returns, and since
 * each turn forks fibers that Effect's scheduler runs as microtasks, Node's event loop never
 * gets a turn: no timer fires, not vitest's timeout nor a live `Effect.timeout`. So the guard
 * counts those sleeps instead, on a `Clock` that wraps the test clock, and dies after
 * `maxImmediate` of them: a regression fails with a message instead of burning a core forever.
 */
import { Duration, Effect } from "effect"

/** Runs `self` with the guarded clock: once `maxImmediate` sleeps have returned at once, every sleep dies. */
export const noSpin = (maxImmediate = 10_000) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.clockWith((clock) => {
    let immediate = 0
    const sleep = (duration: Duration.Duration): Effect.Effect<void> =>
      Effect.suspend(() => {
        const now = clock.unsafeCurrentTimeMillis()
        if (!(now + Duration.toMillis(duration) > now)) immediate++
        // once tripped, every sleep dies, so no fiber of the test can go on spinning
        if (immediate > maxImmediate) {
          return Effect.dieMessage(`spin: ${immediate} sleeps returned at once without moving the clock (now ${now} ms)`)
        }
        return clock.sleep(duration)
      })
    // Everything else is the test clock's own (`TestClock.adjust` finds it as the Clock).
    const guarded = new Proxy(clock, {
      get: (target, key) => {
        if (key === "sleep") return sleep
        const value: unknown = Reflect.get(target, key, target)
        return typeof value === "function" ? value.bind(target) : value
      }
    })
    return Effect.withClock(self, guarded)
  })
