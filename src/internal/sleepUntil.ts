/**
 * Waits for a moment on the `Clock` that never end before it. Every wait in wiz-effect that is
 * computed from the `Clock` ("sleep until `at`") goes through here, because the obvious
 * `Effect.sleep(Duration.millis(at - now))` can end early, and then a loop that sleeps again
 * until `at` spins:
 *
 * - `Duration.millis` of a fractional millisecond rounds to the *nearest* nanosecond, so the
 *   sleep may end up to half a nanosecond before `at`; and `now + (at - now)` need not equal
 *   `at` in floating point either;
 * - `TestClock` ends a sleep at `instant + Duration.toMillis(duration)`, and a sleep that does
 *   not move that sum (a zero duration, or one below the instant's precision) returns at once.
 *
 * So a breaker that wakes a fraction of a nanosecond before `openUntil` is still open, the
 * next wait rounds to zero, and under `TestClock` the loop never suspends: 100% CPU, and no
 * timer of Node's ever fires. `durationUntil` instead starts from the nearest nanosecond and
 * lengthens the sleep until the clock's own arithmetic reaches `at` (so a wait is exact
 * whenever it can be, and a nanosecond or an ulp long otherwise); `sleepUntil` also checks the
 * clock when it wakes and sleeps again if it is early (a live timer may fire a little before
 * the wall clock it is compared with reaches `at`).
 *
 * @internal
 */
import { Duration, Effect } from "effect"

/**
 * The sleep that, started at `now`, ends at or after `at` (Clock milliseconds, possibly
 * fractional): `now + Duration.toMillis(result) >= at`, and `instant + Duration.toMillis(result)
 * > instant`, so it always moves a `TestClock` whose instant is `instant` (give it when `now` is
 * read from another time line than `Clock.currentTimeMillis`, such as the nanosecond one). A
 * caller sleeps because it is not there yet, so when float error puts `at` at or before `now`
 * this is still the shortest sleep that moves the clock (a nanosecond, or an ulp of `instant`),
 * never zero. Infinite when `at` is (and zero when `now` or `instant` is not finite, which no
 * clock reads).
 *
 * @internal
 */
export const durationUntil = (now: number, at: number, instant: number = now): Duration.Duration => {
  if (at === Infinity) return Duration.infinity
  if (!(Number.isFinite(now) && Number.isFinite(instant))) return Duration.zero // no clock reads so
  const target = at > now ? at : now
  let nanos = Math.max(1, Math.round((target - now) * 1e6))
  // Float sums round: lengthen by 1, 2, 4, ... ns until the sums say it is enough.
  for (let step = 1; !(now + nanos / 1e6 >= target && instant + nanos / 1e6 > instant); step *= 2) nanos += step
  return nanos % 1e6 === 0 ? Duration.millis(nanos / 1e6) : Duration.nanos(BigInt(nanos))
}

/**
 * Sleeps until `Clock.currentTimeMillis` reaches `at`; at once when it already has, never when
 * `at` is infinite.
 *
 * @internal
 */
export const sleepUntil = (at: number): Effect.Effect<void> =>
  Effect.clockWith((clock) => {
    const step: Effect.Effect<void> = Effect.suspend(() => {
      const now = clock.unsafeCurrentTimeMillis()
      return now < at ? Effect.zipRight(clock.sleep(durationUntil(now, at)), step) : Effect.void
    })
    return step
  })
