/**
 * Two counts (say calls and failures, or requests and withdrawals) over a sliding window of
 * time, kept in ten slots of a tenth of the window each: a count is forgotten between 0.9 and 1
 * window after it was made. Plain mutable state for callers that touch it inside `Effect.sync`;
 * time is whatever `now` (Clock millis) they pass.
 *
 * Shared by the retry `Budget` and the breaker's `rate` trip policy.
 *
 * @internal
 */

/** @internal */
export interface SlidingWindow {
  /** Add to the two counts of the slot `now` falls in. */
  readonly add: (now: number, first: number, second: number) => void
  /** The two counts of the window ending at `now`, each slot's counts mapped by `f` and summed. */
  readonly sum: (now: number, f: (first: number, second: number) => number) => number
  /** Forget every count. */
  readonly clear: () => void
}

const steps = 10

/** @internal */
export const make = (windowMillis: number): SlidingWindow => {
  const step = windowMillis / steps
  // `stamps[i]` is the step a slot counts for; -Infinity when it counts for none.
  const stamps = new Array<number>(steps).fill(-Infinity)
  const firsts = new Array<number>(steps).fill(0)
  const seconds = new Array<number>(steps).fill(0)
  return {
    add: (now, first, second) => {
      const stepIndex = Math.floor(now / step)
      const i = stepIndex % steps
      if (stamps[i] !== stepIndex) {
        stamps[i] = stepIndex
        firsts[i] = 0
        seconds[i] = 0
      }
      firsts[i]! += first
      seconds[i]! += second
    },
    sum: (now, f) => {
      const current = Math.floor(now / step)
      let total = 0
      for (let i = 0; i < steps; i++) {
        const stamp = stamps[i]!
        if (stamp > current - steps && stamp <= current) total += f(firsts[i]!, seconds[i]!)
      }
      return total
    },
    clear: () => {
      stamps.fill(-Infinity)
    }
  }
}
