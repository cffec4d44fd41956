/**
 * Request hedging: when an attempt has not answered within a delay, start another copy of it
 * and take whichever succeeds first. A slow provider replica or a stuck connection then costs
 * one delay instead of a whole timeout. The first success wins and every other copy is
 * interrupted and awaited; the caller's interruption interrupts every copy.
 *
 * - `delay` is fixed, or learned: the given percentile (say p95) of recent call latencies,
 *   clamped to `[min, max]`, so about that fraction of calls never hedge. Until `samples`
 *   latencies have been seen, the delay is `initial`. A call's latency is the time from its
 *   start to its first success: when a hedge wins, the first copy's latency is unknown but at
 *   least that long; recording the hedge's own, shorter time instead would pull the percentile
 *   down and hedge ever more.
 * - At most `maxHedges` extra copies per call, each one withdrawn from `budget` when given
 *   (`recordRequest` once per call): with no room, no hedge, so a slow provider does not get
 *   its load multiplied.
 * - A copy's failure does not end the race while another copy is running; when every started
 *   copy has failed, the call fails with the first error. A failure never starts a copy:
 *   hedging answers slowness, and retrying is the retry policy's job (hedging a 400 would only
 *   send it again, and hedges inside retries would multiply attempts).
 *
 * A hedged call runs its first copy on a fiber of its own next to a timer fiber — two forks, the
 * price of racing anything in Effect (it costs about what `Effect.timeout` does); no `Deferred`,
 * nothing else until the timer fires. With `maxHedges: 0` or an infinite delay, `self` runs
 * inline. A learned delay re-sorts its ring (100 numbers) once per call.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Budget, Hedge } from "wiz-effect"
 *
 * declare const callModel: Effect.Effect<string, Error>
 *
 * const program = Effect.gen(function* () {
 *   const budget = yield* Budget.make({ ratio: 0.05 })
 *   const hedge = yield* Hedge.make({
 *     delay: { percentile: 0.95, initial: "2 seconds", min: "100 millis", max: "10 seconds" },
 *     budget
 *   })
 *   return yield* hedge.run(callModel)
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Exit, Fiber } from "effect"
import type { Budget } from "./Budget.js"

/**
 * A delay learned from the recent latencies.
 *
 * @since 0.1.0
 * @category models
 */
export interface LearnedDelay {
  /** Which percentile of the recent latencies, in `(0, 1]`: `0.95` hedges about 5% of calls. */
  readonly percentile: number
  /** The delay until `samples` latencies have been seen. */
  readonly initial: Duration.DurationInput
  /** Lower bound of the learned delay (default `0`). */
  readonly min?: Duration.DurationInput
  /** Upper bound of the learned delay (default: none). */
  readonly max?: Duration.DurationInput
  /** How many recent latencies count (a ring; default 100). */
  readonly samples?: number
}

/**
 * What `onHedge` hears: the hedge's number (1 for the first extra copy) and how long after the
 * call's start it began.
 *
 * @since 0.1.0
 * @category models
 */
export interface HedgeEvent {
  readonly hedge: number
  readonly after: Duration.Duration
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long a call may go unanswered before another copy starts: fixed or learned. */
  readonly delay: Duration.DurationInput | LearnedDelay
  /** Extra copies per call at most (default 1). */
  readonly maxHedges?: number
  /** Each hedge is withdrawn from it; with no room, no hedge. */
  readonly budget?: Budget
  /** Runs as each hedge starts (keep it short: the next hedge's timer waits for it). */
  readonly onHedge?: (event: HedgeEvent) => Effect.Effect<void>
}

/**
 * `maxHedges: 1`; for a learned delay `min: 0`, no `max`, `samples: 100`.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  maxHedges: 1,
  min: Duration.zero,
  max: Duration.infinity,
  samples: 100
} as const

/**
 * @since 0.1.0
 * @category models
 */
export interface Hedge {
  /**
   * Runs `self`, hedged. `onHedge`, when given, runs as each of this call's hedges starts,
   * after the policy's own (so a caller can tell its calls apart without fiber-local state).
   */
  readonly run: <A, E, R>(
    self: Effect.Effect<A, E, R>,
    onHedge?: (event: HedgeEvent) => Effect.Effect<void>
  ) => Effect.Effect<A, E, R>
  /** The delay the next call would hedge after (the learned one, once learned). */
  readonly delay: Effect.Effect<Duration.Duration>
}

/** How a hedger picks its delay; `record` is undefined when nothing is learned. */
interface DelayPolicy {
  readonly current: () => Duration.Duration
  readonly record: ((millis: number) => void) | undefined
}

const isLearned = (delay: Options["delay"]): delay is LearnedDelay =>
  typeof delay === "object" && delay !== null && "percentile" in delay

const fixedDelay = (delay: Duration.DurationInput): DelayPolicy => {
  const duration = Duration.decode(delay)
  return { current: () => duration, record: undefined }
}

const learnedDelay = (options: LearnedDelay): DelayPolicy => {
  const { percentile } = options
  const size = options.samples ?? defaults.samples
  if (!(percentile > 0 && percentile <= 1) || !Number.isInteger(size) || size < 1) {
    throw new RangeError(
      `Hedge: percentile must be in (0, 1] and samples a positive integer (got ${percentile}, ${size})`
    )
  }
  const initial = Duration.decode(options.initial)
  const min = Duration.decode(options.min ?? defaults.min)
  const max = Duration.decode(options.max ?? defaults.max)
  // Nearest rank; the epsilon keeps 0.7 × 10 = 7.000000000000001 at rank 7.
  const rank = Math.max(0, Math.ceil(percentile * size - 1e-9) - 1)
  const ring = new Array<number>(size)
  let count = 0
  let learned: Duration.Duration | undefined
  return {
    current: () => {
      if (count < size) return initial
      if (learned === undefined) {
        const sorted = ring.slice().sort((a, b) => a - b)
        learned = Duration.clamp(Duration.millis(sorted[rank]!), { minimum: min, maximum: max })
      }
      return learned
    },
    record: (millis) => {
      ring[count % size] = millis
      count++
      learned = undefined
    }
  }
}

/**
 * A hedging policy.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Hedge> =>
  Effect.sync(() => {
    const maxHedges = options.maxHedges ?? defaults.maxHedges
    if (!Number.isInteger(maxHedges) || maxHedges < 0) {
      throw new RangeError(`Hedge: maxHedges must be a non-negative integer (got ${maxHedges})`)
    }
    const policy = isLearned(options.delay) ? learnedDelay(options.delay) : fixedDelay(options.delay)
    const { budget, onHedge } = options
    const mayHedge = budget === undefined ? Effect.succeed(true) : budget.tryWithdraw

    /** Races copies of `self`, one more each `delay`; `onSuccess` runs in the winner as it wins. */
    const hedged = <A, E, R>(
      self: Effect.Effect<A, E, R>,
      delay: Duration.Duration,
      onSuccess: Effect.Effect<void>,
      onCallHedge: ((event: HedgeEvent) => Effect.Effect<void>) | undefined
    ) =>
      Effect.uninterruptibleMask((restore) => {
        const copies: Array<Fiber.RuntimeFiber<A, E>> = []
        let running = 0
        let outcome: Exit.Exit<A, E> | undefined
        let firstFailure: Exit.Exit<A, E> | undefined
        let wake: ((exit: Exit.Exit<A, E>) => void) | undefined

        const settle = (exit: Exit.Exit<A, E>): Effect.Effect<void> => {
          running--
          if (outcome !== undefined) return Effect.void // a loser, interrupted
          if (Exit.isFailure(exit)) {
            firstFailure ??= exit
            if (running > 0) return Effect.void
            outcome = firstFailure
            wake?.(outcome)
            return Effect.void
          }
          outcome = exit
          wake?.(exit)
          return onSuccess
        }
        // Runs uninterruptibly (forked from the mask), so a started copy is always in `copies`.
        const start = Effect.suspend(() => {
          running++
          return Effect.map(
            Effect.forkDaemon(Effect.onExit(restore(self), settle)),
            (fiber) => {
              copies.push(fiber)
            }
          )
        })
        // Sleeps interruptibly; starting a hedge is not interrupted half-way.
        const timer = (hedge: number): Effect.Effect<void, never, R> =>
          Effect.zipRight(
            Effect.interruptible(Effect.sleep(delay)),
            Effect.suspend(() =>
              outcome !== undefined ? Effect.void : Effect.flatMap(mayHedge, (ok) => {
                if (!ok) return Effect.void
                const event: HedgeEvent = { hedge, after: Duration.times(delay, hedge) }
                const own = onHedge?.(event)
                const caller = onCallHedge?.(event)
                const told = own === undefined ? caller : caller === undefined ? own : Effect.zipRight(own, caller)
                const started = told === undefined ? start : Effect.zipRight(start, told)
                return hedge < maxHedges ? Effect.zipRight(started, timer(hedge + 1)) : started
              })
            )
          )
        const answer = restore(Effect.async<A, E>((resume) => {
          if (outcome === undefined) wake = resume
          else resume(outcome)
        }))
        // The timer first: once it is stopped, no copy can start behind the cleanup's back.
        return Effect.zipRight(
          start,
          Effect.flatMap(Effect.forkDaemon(timer(1)), (timerFiber) =>
            Effect.onExit(answer, () => Effect.zipRight(Fiber.interrupt(timerFiber), Fiber.interruptAll(copies))))
        )
      })

    const recordRequest = budget === undefined ? Effect.void : budget.recordRequest
    const { record } = policy
    const hedge: Hedge = {
      run: (self, onCallHedge) =>
        Effect.flatMap(recordRequest, () => {
          const delay = policy.current()
          const hedging = maxHedges > 0 && Duration.isFinite(delay)
          if (record === undefined) return hedging ? hedged(self, delay, Effect.void, onCallHedge) : self
          return Effect.flatMap(Clock.currentTimeMillis, (startedAt) => {
            const recordLatency = Effect.map(Clock.currentTimeMillis, (now) => record(now - startedAt))
            return hedging ? hedged(self, delay, recordLatency, onCallHedge) : Effect.tap(self, () => recordLatency)
          })
        }),
      delay: Effect.sync(policy.current)
    }
    return hedge
  })
