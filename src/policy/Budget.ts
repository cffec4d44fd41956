/**
 * A budget for extra attempts (retries, hedges): over a sliding window of time they may add at
 * most `ratio` of the traffic, plus a small floor of `minPerSecond` so a quiet service can
 * still retry. When a provider goes down, retries stop at that fraction instead of multiplying
 * the load (a retry storm). The window slides in ten steps, so old traffic is forgotten.
 *
 * Time is read only through Effect's `Clock`, so a budget is exact under `TestClock`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Budget } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const budget = yield* Budget.make({ ratio: 0.1, minPerSecond: 1, window: "10 seconds" })
 *   yield* budget.recordRequest
 *   const mayRetry = yield* budget.tryWithdraw // true while the budget has room
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Duration, Effect } from "effect"
import * as SlidingWindow from "../internal/slidingWindow.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Extra attempts allowed per first attempt, over the window. */
  readonly ratio?: number
  /** Extra attempts allowed per second of window whatever the traffic. */
  readonly minPerSecond?: number
  /** How far back requests and withdrawals count. */
  readonly window?: Duration.DurationInput
}

/**
 * `ratio: 0.2`, `minPerSecond: 10`, `window: "10 seconds"` — Linkerd's and Finagle's retry
 * budget (20% of requests plus 10 retries a second, over 10 s). It survives everyday transient
 * faults (at 30% faults a batch needs about 0.4 retries per first attempt, most of them after
 * 429s, which are not charged by default) while an outage still cannot triple the load.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  ratio: 0.2,
  minPerSecond: 10,
  window: Duration.seconds(10)
} as const

/**
 * @since 0.1.0
 * @category models
 */
export interface Budget {
  /** Count one first attempt: it earns `ratio` of an extra attempt. */
  readonly recordRequest: Effect.Effect<void>
  /** `recordRequest`, then `self`, in one step (what a retry policy does per call). */
  readonly counted: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Take one extra attempt from the budget: `true` (and counted) when there was room. */
  readonly tryWithdraw: Effect.Effect<boolean>
  /** Whole extra attempts the budget would allow now. */
  readonly available: Effect.Effect<number>
}

/**
 * A new, empty budget.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Budget> =>
  Effect.sync(() => {
    const ratio = options.ratio ?? defaults.ratio
    const window = Duration.toMillis(options.window ?? defaults.window)
    if (!(ratio >= 0) || !(window > 0)) {
      throw new RangeError(`Budget: ratio must be >= 0 and window > 0 (got ${ratio}, ${window} ms)`)
    }
    const reserve = (options.minPerSecond ?? defaults.minPerSecond) * (window / 1000)
    // first: requests, second: withdrawals
    const counts = SlidingWindow.make(window)
    // Sums of fractional deposits (0.1 × n) drift by an ulp; round them back before comparing.
    const room = (now: number): number =>
      Math.round((reserve + counts.sum(now, (requests, withdrawals) => ratio * requests - withdrawals)) * 1e9) / 1e9

    const budget: Budget = {
      recordRequest: Effect.clockWith((clock) => Effect.sync(() => counts.add(clock.unsafeCurrentTimeMillis(), 1, 0))),
      counted: (self) =>
        Effect.clockWith((clock) => {
          counts.add(clock.unsafeCurrentTimeMillis(), 1, 0)
          return self
        }),
      tryWithdraw: Effect.clockWith((clock) =>
        Effect.sync(() => {
          const now = clock.unsafeCurrentTimeMillis()
          if (room(now) < 1) return false
          counts.add(now, 0, 1)
          return true
        })
      ),
      available: Effect.clockWith((clock) => Effect.sync(() => Math.max(0, Math.floor(room(clock.unsafeCurrentTimeMillis())))))
    }
    return budget
  })
