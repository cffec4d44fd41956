/**
 * A concurrency limit that finds the provider's knee by itself: it grows while latency stays
 * flat, and shrinks when latency rises above its baseline or the provider sheds load (429,
 * 529 `Overloaded`, a timeout), always within `[min, max]`. Callers beyond the limit wait in
 * strict FIFO order, as on a {@link Bulkhead}: one linked queue, each waiter resumed exactly
 * once, and no call is admitted while `active >= limit` (a lowered limit is honoured as calls
 * finish; none is cut short).
 *
 * How it decides, after reading Netflix's concurrency-limits (AIMD, Vegas, Gradient2) and
 * Envoy's adaptive concurrency filter:
 *
 * - it works in **rounds**: a round is the calls admitted under one limit, closed once
 *   `max(minSamples, 2 × limit)` of them have answered (about two round trips), like Netflix's
 *   sample windows; a call admitted under an earlier limit is not counted in a later round, so
 *   each verdict is about the limit it judges (TCP reacts once per round trip the same way);
 * - the **baseline** is the lowest of the last `baselineRounds` rounds' average latencies,
 *   each raised by two standard errors. Averages, not the minimum latency (Vegas, Envoy's
 *   minRTT): LLM calls vary by size, and a minimum biases the baseline low (Gradient2's
 *   finding). A window, not a decaying long-term average (Gradient2), which drifts up under
 *   sustained load and takes the limit with it. The two standard errors undo the chance low of
 *   picking the lowest of many noisy averages, which would read as load and shrink the limit
 *   for nothing (measured: without them the limit collapsed to 1 at a capacity of 16). No
 *   probing window at a tiny limit (Envoy's minRTT recalculation), which costs throughput;
 * - a round whose average is within `1 + tolerance` of the baseline, with the limit in use,
 *   **grows** the limit: doubling until the first latency shrink (slow start), then by one;
 * - a round slower than that beyond doubt — its average less one standard error above
 *   `baseline × (1 + tolerance)`, or less three before the round is over (a sudden slowdown
 *   after `minSamples` answers; it halves the limit at most) — **shrinks** it by the gradient
 *   `baseline / average` (Gradient2, Envoy): when latency grows with the load, that lands on
 *   the knee in one step, whatever the overshoot;
 * - a latency rise that is **not load** (a provider three times slower for good) is told by
 *   what a shrink does: a whole round at a third less than the slow round before it that is
 *   not even `tolerance` faster (or one at the floor) makes its latency the baseline and puts
 *   the limit back where the run of shrinks started. Rounds within a run take a third off at
 *   most, and slow rounds join the baseline's window too. Without this the baseline never
 *   adopted the new normal: measured, a provider turning 3× slower drove the limit to 1 and
 *   kept it there;
 * - a **drop** — an error `isDrop` accepts: `RateLimited`, `Overloaded`, `ModelTimeout` by
 *   default — multiplies the limit by `backoff` at once (AIMD), once per round, when the
 *   round's drops reach `dropShare` of the calls on the provider (its answers, and every call
 *   in flight: fast failures come back before the successes that started with them, and
 *   while earlier rounds' calls still run), are all its answers so far (or, after `minSamples`
 *   answers, more than `dropShare` of them), and are more than the provider's usual fault rate
 *   explains (beyond two standard deviations; a rate of half the answers or more is shedding,
 *   never usual). A provider whose faults come at a steady rate whatever the load (a fifth of
 *   its calls, say) would otherwise shrink the limit in almost every round: measured, 2,000
 *   tasks at 20% faults took 420 s against 40 s at a fixed 64.
 *
 * Netflix and Envoy target latency; the benchmark (`bench/flow.ts`) also holds it to goodput:
 * throughput against the best fixed concurrency of a sweep, and the share of `Overloaded`.
 *
 * Time comes from the `Clock`, so it runs exactly under `TestClock`. The limit is observable:
 * `changes` streams it (a `SubscriptionRef`), `stats` reads it with the callers active and
 * waiting.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { AdaptiveLimit, AiModel } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   const limit = yield* AdaptiveLimit.make({ initial: 4, max: 256 })
 *   yield* Effect.forkScoped(Stream.runForEach(limit.changes, (n) => Effect.log(`limit ${n}`)))
 *   return yield* Effect.forEach(requests, (request) => limit.withPermit(model.generate(request)), {
 *     concurrency: "unbounded"
 *   })
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Effect, Option, Predicate, Stream, SubscriptionRef } from "effect"
import { PermitWaiter, WaitQueue } from "../internal/waitQueue.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The limit to start from. */
  readonly initial?: number
  /** The limit never goes below this (a positive integer). */
  readonly min?: number
  /** The limit never goes above this (an integer `>= min`, or `Infinity`). */
  readonly max?: number
  /** How far a round's average latency may rise above the baseline before the limit shrinks. */
  readonly tolerance?: number
  /** What a drop multiplies the limit by (in `[0.5, 1)`). */
  readonly backoff?: number
  /** A round closes after at least this many answers (and at least twice the limit). */
  readonly minSamples?: number
  /** How many recent rounds the baseline remembers. */
  readonly baselineRounds?: number
  /** Whether a failure says the provider is shedding load. */
  readonly isDrop?: (error: unknown) => boolean
  /** The share of the calls on the provider in a round (in `(0, 1]`) that must be drops before the limit shrinks. */
  readonly dropShare?: number
}

const dropTags: ReadonlySet<string> = new Set(["RateLimited", "Overloaded", "ModelTimeout"])

/**
 * `initial: 4` (a cautious start; slow start doubles it each round), `min: 1`, `max: 1000`
 * (Envoy's default ceiling), `tolerance: 0.1` (with the standard-error margins, the limit
 * settles 10–20% above the knee: the benchmark's p99 stays within 1.2× the best fixed
 * concurrency's, and 0.05 lost throughput to shrinks for nothing), `backoff: 0.9` (Netflix's
 * AIMD), `minSamples: 10` (Netflix's window size), `dropShare: 0.25` (a provider's background
 * faults rarely reach it; one shedding load passes it as soon as the limit overshoots), `baselineRounds: 30` (long enough to span the
 * sawtooth, short enough to follow a workload that changes), `isDrop`: `RateLimited`,
 * `Overloaded` and `ModelTimeout`.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  initial: 4,
  min: 1,
  max: 1000,
  tolerance: 0.1,
  backoff: 0.9,
  minSamples: 10,
  dropShare: 0.25,
  baselineRounds: 30,
  isDrop: (error: unknown): boolean =>
    Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" && dropTags.has(error._tag)
} as const

/**
 * What the limiter is doing right now.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** The limit in force. */
  readonly limit: number
  /** Calls running. */
  readonly active: number
  /** Calls waiting for a permit. */
  readonly queued: number
  /** The baseline latency, in milliseconds (`undefined` before the first round closes). */
  readonly baselineMillis: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface AdaptiveLimit {
  /**
   * Runs `self` once fewer than `limit` calls are running, waiting in FIFO order; its latency
   * and outcome feed the limit.
   */
  readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** The limit in force. */
  readonly limit: Effect.Effect<number>
  /** The limit in force, read synchronously (for a caller that sizes its own queue by it). */
  readonly unsafeLimit: () => number
  /** The limit now, then each change. */
  readonly changes: Stream.Stream<number>
  /** The live figures. */
  readonly stats: Effect.Effect<Stats>
}

const positiveInt = (n: number): boolean => Number.isInteger(n) && n >= 1

/**
 * A new adaptive limit at `initial`. Options out of range are a defect (`RangeError`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<AdaptiveLimit> =>
  Effect.suspend(() => {
    const min = options.min ?? defaults.min
    const max = options.max ?? defaults.max
    const initial = options.initial ?? defaults.initial
    const tolerance = options.tolerance ?? defaults.tolerance
    const backoff = options.backoff ?? defaults.backoff
    const minSamples = options.minSamples ?? defaults.minSamples
    const dropShare = options.dropShare ?? defaults.dropShare
    const baselineRounds = options.baselineRounds ?? defaults.baselineRounds
    const isDrop = options.isDrop ?? defaults.isDrop
    if (
      !positiveInt(min) || !(max === Infinity || (Number.isInteger(max) && max >= min)) ||
      !(Number.isInteger(initial) && initial >= min && initial <= max) ||
      !(tolerance > 0) || !(backoff >= 0.5 && backoff < 1) || !positiveInt(minSamples) || !positiveInt(baselineRounds) ||
      !(dropShare > 0 && dropShare <= 1)
    ) {
      throw new RangeError(
        `AdaptiveLimit: min a positive integer, max an integer >= min (or Infinity), initial in [min, max], ` +
          `tolerance > 0, backoff in [0.5, 1), minSamples and baselineRounds positive integers, dropShare in (0, 1]`
      )
    }
    return Effect.map(SubscriptionRef.make(initial), (ref) => build(ref, {
      min,
      max,
      initial,
      tolerance,
      backoff,
      minSamples,
      baselineRounds,
      isDrop,
      dropShare
    }))
  })

interface Config {
  readonly min: number
  readonly max: number
  readonly initial: number
  readonly tolerance: number
  readonly backoff: number
  readonly minSamples: number
  readonly dropShare: number
  readonly baselineRounds: number
  readonly isDrop: (error: unknown) => boolean
}

const build = (ref: SubscriptionRef.SubscriptionRef<number>, config: Config): AdaptiveLimit => {
  const { backoff, baselineRounds, dropShare, isDrop, max, min, minSamples, tolerance } = config
  // A round closes once twice the limit has answered (about two round trips): enough samples
  // to tell load from the spread of LLM latencies.
  const roundFactor = 2
  let limit = config.initial
  let active = 0
  const queue = new WaitQueue<PermitWaiter>()
  // Slow start until the first shrink.
  let slowStart = true
  // The round: calls admitted under the current limit.
  let epoch = 0
  let samples = 0
  let drops = 0
  let total = 0
  let squares = 0
  let busiest = 0
  // The last rounds' averages plus two standard errors (upper bounds of their means), oldest
  // first. The baseline is the lowest: the lowest of many plain averages is biased low by
  // chance (about two standard errors for 30 rounds), which would read as load.
  const bounds: Array<number> = []
  let baseline: number | undefined = undefined
  // A run of latency shrinks: the limit before it, and its last whole slow round (its limit
  // and average). When a round at a third less is no faster, the rise was not load (a
  // provider slower for good): it becomes the baseline, and the limit goes back.
  let shrunkFrom: number | undefined = undefined
  let slowRound: { readonly limit: number; readonly average: number } | undefined = undefined

  // Every answer, earlier rounds' too, slowly forgotten: the provider's usual fault rate.
  let heard = 0
  let heardDrops = 0
  const hear = (dropped: boolean): void => {
    if (heard >= baselineRounds * minSamples) {
      heard /= 2
      heardDrops /= 2
    }
    heard++
    if (dropped) heardDrops++
  }

  const admit = (): number => {
    active++
    if (active > busiest) busiest = active
    return epoch
  }

  // Grants the queue from its head while there is room under the limit.
  const dispatch = (): void => {
    let head = queue.head
    while (head !== undefined && active < limit) {
      admit()
      queue.unlink(head)
      head.grant()
      head = queue.head
    }
  }

  const setLimit = (next: number): boolean => {
    const bounded = Math.max(min, Math.min(max, next))
    epoch++
    samples = 0
    drops = 0
    total = 0
    squares = 0
    busiest = active
    if (bounded === limit) return false
    limit = bounded
    return true
  }

  // One answer of a call admitted in round `round`, `millis` after it started; true when the
  // limit changed.
  const sample = (round: number, millis: number): boolean => {
    hear(false)
    if (round !== epoch) return false
    samples++
    total += millis
    squares += millis * millis
    if (samples < minSamples) return false
    const average = total / samples
    const error = Math.sqrt(Math.max(0, squares / samples - average * average) / samples)
    const full = samples >= roundFactor * limit
    // Slower beyond doubt: at the end of a round, even its mean less one standard error is
    // above the tolerance; before the end (a sudden slowdown), less three.
    const low = average - (full ? 1 : 3) * error
    if (baseline !== undefined && low > baseline * (1 + tolerance)) {
      // Before its end, a round shrinks the limit only to start a run of shrinks (a sudden
      // slowdown); within one, a whole round is needed to tell load from a slower provider.
      if (!full && shrunkFrom !== undefined) return false
      if (full) {
        // Under load, latency falls with the limit: a third less load, a third less latency.
        // A round at a third less than the last (or at the floor) that is not even `tolerance`
        // faster says the provider is slower whatever the load.
        const last = slowRound
        slowRound = { limit, average }
        if (last !== undefined && (3 * limit <= 2 * last.limit || limit === min) && average >= last.average * (1 - tolerance)) {
          bounds.length = 0
          remember(average + 2 * error)
          const back = shrunkFrom ?? limit
          shrunkFrom = slowRound = undefined
          return setLimit(back)
        }
        remember(average + 2 * error)
      }
      slowStart = false
      // By the gradient, but a round cut short halves the limit at most (its average is of the
      // calls that came first), and a round within a run of shrinks takes a third off at most:
      // enough to tell load from a slower provider by the next round.
      const lowest = !full ? Math.floor(limit / 2) : shrunkFrom === undefined ? 0 : Math.floor(2 * limit / 3)
      shrunkFrom ??= limit
      return setLimit(Math.min(limit - 1, Math.max(lowest, Math.floor(limit * baseline / average))))
    }
    if (!full) return false
    shrunkFrom = slowRound = undefined
    remember(average + 2 * error)
    // grow only when the limit was in use: an idle limit says nothing about the provider
    if (busiest < limit) return setLimit(limit)
    return setLimit(slowStart ? limit * 2 : limit + 1)
  }

  // A closed round's upper bound joins the window the baseline is the lowest of.
  const remember = (bound: number): void => {
    bounds.push(bound)
    if (bounds.length > baselineRounds) bounds.shift()
    baseline = Math.min(...bounds)
  }

  const drop = (round: number): boolean => {
    // Faults that come whatever the load: the rate so far, once there are enough answers to
    // tell, unless it is half of them or more (a provider refusing that many is shedding).
    const usual = heard >= minSamples && heardDrops < 2 * dropShare * heard ? heardDrops / heard : 0
    hear(true)
    if (round !== epoch) return false
    // Load shed, not background faults: `dropShare` of the calls on the provider (the round's
    // answers and every call still in flight: fast failures come back before the successes
    // that started with them, and a round's first answers while calls of the last one still
    // run, so the answers so far alone would overstate them), and of its answers: every one so
    // far, or more than that share of at least `minSamples` (a steady fault rate breaks up a
    // run of drops).
    const answered = samples + ++drops
    if (drops < dropShare * (answered + active)) return false
    if (drops < answered && (answered < minSamples || drops <= dropShare * answered)) return false
    // ... and more than the usual faults explain, beyond two standard deviations
    const expected = usual * (answered + active)
    if (drops <= expected + 2 * Math.sqrt(expected)) return false
    // at the floor there is nothing to shrink: the round goes on, so it can close and grow
    if (limit === min) return false
    return setLimit(Math.min(limit - 1, Math.floor(limit * backoff)))
  }

  const publish = (changed: boolean): Effect.Effect<void> => changed ? SubscriptionRef.set(ref, limit) : Effect.void

  // Runs an admitted call and feeds its outcome back.
  const run = <A, E, R>(self: Effect.Effect<A, E, R>, round: number, start: number): Effect.Effect<A, E, R> =>
    Effect.matchCauseEffect(self, {
      onFailure: (cause) =>
        Effect.suspend(() => {
          active--
          const failure = Cause.failureOption(cause)
          const changed = Option.isSome(failure) && isDrop(failure.value) ? drop(round) : false
          dispatch()
          return Effect.zipRight(publish(changed), Effect.failCause(cause))
        }),
      onSuccess: (a) =>
        Effect.clockWith((clock) => {
          active--
          const changed = sample(round, clock.unsafeCurrentTimeMillis() - start)
          dispatch()
          return Effect.as(publish(changed), a)
        })
    })

  const withPermit = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.clockWith((clock): Effect.Effect<A, E, R> => {
        if (queue.head === undefined && active < limit) {
          return run(restore(self), admit(), clock.unsafeCurrentTimeMillis())
        }
        const waiter = new PermitWaiter(1)
        queue.push(waiter)
        return Effect.matchCauseEffect(restore(waiter.await), {
          // Only interruption ends the wait early: pass the permit on, or leave the queue.
          onFailure: (cause) => {
            if (waiter.granted) active--
            else queue.unlink(waiter)
            dispatch()
            return Effect.failCause(cause)
          },
          onSuccess: () => Effect.clockWith((clock) => run(restore(self), epoch, clock.unsafeCurrentTimeMillis()))
        })
      })
    )

  return {
    withPermit,
    limit: Effect.sync(() => limit),
    unsafeLimit: () => limit,
    changes: ref.changes,
    stats: Effect.sync(() => ({
      limit,
      active,
      queued: queue.size,
      baselineMillis: baseline
    }))
  }
}
