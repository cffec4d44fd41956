/**
 * Whether a provider is throttling the batch: the share of a model's recent attempts it refused
 * with a 429. A task waiting out a Retry-After keeps its place in `processAll` only then.
 *
 * Why: a 429 means two things. When most attempts meet one (a requests-per-minute limit, a
 * storm), the provider is asking the whole batch to slow down, and tasks that keep their places
 * while they wait are what slows it: at most `concurrency` calls go out per Retry-After. When
 * 429s are the odd refusal among answered calls (a provider's transient fault: a tenth of the
 * calls at a 20% fault rate), the Retry-After concerns that request only, and a place kept
 * through it leaves a call slot idle for the whole wait: at 20% faults that alone made the
 * degradation batch (bench/degrade.ts) take 1.4× its floor, against 1.16–1.18× with the places
 * freed (issue 17.9). The line is the breaker's: half of the model's attempts over the last
 * 10 s, counted when they start, so 429s that come back at once are not read against answers
 * still on the wire.
 *
 * Plain mutable state per model, touched synchronously: the attempt pipeline (`Tier`) counts
 * attempts, `TaskRun.wait` counts the 429 it is about to wait out, then asks.
 *
 * @example
 * ```ts
 * import * as Throttling from "wiz-effect/agent/Throttling"
 *
 * const throttling = Throttling.make()
 * throttling.attempted("gpt", 0)
 * throttling.attempted("gpt", 0)
 * throttling.refused("gpt", 0)
 * throttling.throttled("gpt", 0) // true: one of the two attempts was refused
 * ```
 *
 * @since 0.1.0
 */
import * as SlidingWindow from "../internal/slidingWindow.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Throttling {
  /** Count an attempt on `model` starting at Clock time `now` (ms). */
  readonly attempted: (model: string, now: number) => void
  /** Count a 429 from `model` at `now`. */
  readonly refused: (model: string, now: number) => void
  /** Whether at least `threshold` of `model`'s attempts over the window ending at `now` were refused. */
  readonly throttled: (model: string, now: number) => boolean
}

/**
 * `threshold: 0.5` of the attempts over a window of 10 s.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  threshold: 0.5,
  windowMillis: 10_000
} as const

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: { readonly threshold?: number; readonly windowMillis?: number } = {}): Throttling => {
  const threshold = options.threshold ?? defaults.threshold
  const windowMillis = options.windowMillis ?? defaults.windowMillis
  // per model: attempts and 429s
  const windows = new Map<string, SlidingWindow.SlidingWindow>()
  const windowOf = (model: string): SlidingWindow.SlidingWindow => {
    let window = windows.get(model)
    if (window === undefined) {
      window = SlidingWindow.make(windowMillis)
      windows.set(model, window)
    }
    return window
  }
  return {
    attempted: (model, now) => windowOf(model).add(now, 1, 0),
    refused: (model, now) => windowOf(model).add(now, 0, 1),
    throttled: (model, now) => {
      const window = windowOf(model)
      const refusals = window.sum(now, (_, refused) => refused)
      return refusals > 0 && refusals >= threshold * window.sum(now, (attempts) => attempts)
    }
  }
}
