/**
 * Retry with backoff that knows which failures are worth another try. The seed's
 * `retryWithBackoff` retried everything (even a 400), had no jitter and no cap, ignored
 * Retry-After and could not be cancelled while it slept (seed bug 4). This policy:
 *
 * - works on errors of any type, and retries only those `isRetryable` accepts (by default every
 *   error except those `AiModel.isPermanent` names: `InvalidRequest`, `QuotaExhausted`,
 *   `AuthenticationFailed`);
 * - waits an exponential backoff, capped, then jittered (`full`, `equal` or `none`) with Effect's
 *   `Random`, so `Effect.withRandom(Random.make(seed))` makes every wait reproducible;
 * - counts the time a failed attempt already waited (`waited`: a `ModelTimeout` waited its
 *   timeout) against the backoff, so a hung call is not followed by a pause it already took;
 * - waits at least an error's `retryAfter` (`RateLimited`, an open breaker's `CircuitOpen`), and
 *   fails at once with that same error when it asks for more than `retryAfterMax`, so a
 *   fallback tier can answer instead of the caller sleeping through an hour-long Retry-After;
 * - stops at `maxAttempts`, at an overall `deadline` (no attempt starts that cannot finish in
 *   time), and when a shared {@link Budget.Budget} has no room, so an outage does not become a
 *   retry storm;
 * - sleeps through `Effect.sleep`: interrupting the caller during a backoff ends the call at once.
 *
 * One policy serves many calls; `apply(attempt, callOptions)` lets each call bring its own
 * hooks, its own way to wait and its own absolute deadline, so a caller (like `AgentService`,
 * one policy for every task) needs no fiber-local state to tell its calls apart.
 *
 * The backoff itself is an Effect {@link schedule}. The retry is entered through `catchAll`, so a
 * first attempt that succeeds runs no `Schedule` driver, no extra fiber and reads no clock
 * (unless a `deadline` is set: then every attempt runs under a timeout).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel, Retry } from "wiz-effect"
 *
 * const policy = Retry.make({ maxAttempts: 5, cap: "10 seconds", deadline: "1 minute" })
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   const request = new AiModel.CompletionRequest({ prompt: "Summarise: ...", maxTokens: 64 })
 *   return yield* policy.apply(model.generate(request))
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Predicate, Random, Schedule, ScheduleDecision, Schema } from "effect"
import { dual } from "effect/Function"
import * as ErrorInfo from "../events/ErrorInfo.js"
import { durationUntil } from "../internal/sleepUntil.js"
import { isPermanent, ModelTimeout } from "../model/AiModel.js"
import type { Budget } from "./Budget.js"

/**
 * How a backoff delay `d` is spread: `full` draws uniformly from `[0, d]`, `equal` from
 * `[d/2, d]`, `none` keeps `d`.
 *
 * @since 0.1.0
 * @category models
 */
export type Jitter = "full" | "equal" | "none"

/**
 * The shape of the backoff, as used by {@link schedule}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Backoff {
  /** The first retry's delay before jitter. */
  readonly base?: Duration.DurationInput
  /** Each further retry waits `factor` times longer than the one before. */
  readonly factor?: number
  /** Upper bound on the delay, applied before jitter. */
  readonly cap?: Duration.DurationInput
  /** Attempts in all, the first included (so `maxAttempts - 1` retries). */
  readonly maxAttempts?: number
  /** How the capped delay is randomised. */
  readonly jitter?: Jitter
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<E = unknown> extends Backoff {
  /**
   * The longest `retryAfter` an error may ask for. Above it the call fails at once with that
   * error, unchanged, so a fallback can take over.
   */
  readonly retryAfterMax?: Duration.DurationInput
  /**
   * Overall time allowed, from the call's start. An attempt still running when it passes is
   * interrupted and the call fails with {@link DeadlineExceeded}; a retry that could not start
   * before it is not made. Each attempt then runs under `Effect.timeoutTo` (two fibers and a
   * timer: ~50 µs per call, against ~0.7 µs for the policy without a deadline).
   */
  readonly deadline?: Duration.DurationInput
  /**
   * How long one attempt may take (the caller enforces it). With a `deadline`, a retry starts
   * only if `start + attemptTimeout` is no later than the deadline. An attempt timeout that is
   * infinite or no shorter than the deadline is ignored: a retry then only has to start before it.
   */
  readonly attemptTimeout?: Duration.DurationInput
  /** Whether an error may go away when the attempt is made again. */
  readonly isRetryable?: (error: E) => boolean
  /**
   * How long the failed attempt itself waited before this error, counted against the backoff
   * that follows it: the retry waits `max(0, delay - waited)`. By default a `ModelTimeout`'s
   * `timeout` (an attempt held to a 2 s timeout has already spaced the calls by more than the
   * first backoffs), nothing for other errors.
   */
  readonly waited?: (error: E) => Duration.Duration | undefined
  /**
   * A budget shared by many calls: each call records its first attempt, each retry withdraws
   * from it, and a retry with no room left is not made.
   */
  readonly budget?: Budget
  /**
   * Whether a retry after this error is charged to the `budget`. By default every retry is,
   * except after a `CircuitOpen` (the breaker refused that attempt, so it never reached the
   * provider and added no load to it) and after a `RateLimited` that says when to come back
   * (waiting out a provider's Retry-After is what it asked for, not a retry storm).
   */
  readonly chargesBudget?: (error: E) => boolean
  /** Runs before each retry's wait. */
  readonly onRetry?: (event: RetryEvent<E>) => Effect.Effect<void>
  /** Runs when the call fails for good, just before it fails. */
  readonly onGiveUp?: (event: GiveUpEvent<E>) => Effect.Effect<void>
}

/**
 * A retry about to wait `delay` and then make attempt number `attempt` (2 for the first retry).
 *
 * @since 0.1.0
 * @category models
 */
export interface RetryEvent<E> {
  readonly attempt: number
  readonly delay: Duration.Duration
  readonly error: E
}

/**
 * Why a call stopped retrying.
 *
 * @since 0.1.0
 * @category models
 */
export type GiveUpReason = "not-retryable" | "max-attempts" | "budget" | "deadline" | "retry-after-too-long"

/**
 * A call failing for good after `attempts` attempts with `error`: its last attempt's error, or
 * {@link DeadlineExceeded} when the deadline interrupted an attempt.
 *
 * @since 0.1.0
 * @category models
 */
export interface GiveUpEvent<E> {
  readonly reason: GiveUpReason
  readonly attempts: number
  readonly error: E | DeadlineExceeded
}

/**
 * `base: 500 ms`, `factor: 2`, `cap: 30 s`, `maxAttempts: 4`, `jitter: "full"`,
 * `retryAfterMax: 60 s`, `isRetryable`: every error but those `AiModel.isPermanent` names,
 * `waited`: a `ModelTimeout`'s timeout, and `chargesBudget`: every error but `CircuitOpen` and
 * a `RateLimited` with a `retryAfter`.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  base: Duration.millis(500),
  factor: 2,
  cap: Duration.seconds(30),
  maxAttempts: 4,
  jitter: "full",
  retryAfterMax: Duration.seconds(60),
  isRetryable: (error: unknown): boolean => !isPermanent(error),
  waited: (error: unknown): Duration.Duration | undefined => error instanceof ModelTimeout ? error.timeout : undefined,
  chargesBudget: (error: unknown): boolean =>
    !Predicate.isTagged(error, "CircuitOpen") && !(Predicate.isTagged(error, "RateLimited") && retryAfterOf(error) !== undefined)
} as const

/**
 * The overall deadline passed while an attempt was still running; the attempt was interrupted.
 *
 * @since 0.1.0
 * @category errors
 */
export class DeadlineExceeded extends Schema.TaggedError<DeadlineExceeded>()("DeadlineExceeded", {
  deadline: Schema.Duration,
  /** Attempts started, the interrupted one included. */
  attempts: Schema.Int,
  /** What the call was waiting for when the deadline passed (an open circuit, a backoff...). */
  waitingFor: Schema.optional(Schema.String),
  /** The error of the last attempt that failed before the deadline, if one did. */
  lastError: Schema.optional(ErrorInfo.ErrorInfo)
}) {
  override get message(): string {
    const waiting = this.waitingFor === undefined ? "" : `; waiting for ${this.waitingFor}`
    const last = this.lastError === undefined ? "" : `; last error ${this.lastError._tag}: ${this.lastError.message}`
    return `no result within ${Duration.format(this.deadline)} (${this.attempts} attempts)${waiting}${last}`
  }
}

/**
 * What one call through {@link Policy.apply} may add to the policy's options: hooks that know
 * the call (so a caller needs no fiber-local state to tell calls apart), how it waits, and an
 * absolute deadline of its own.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallOptions<E> {
  /**
   * Clock time (ms) after which this call starts no retry; with `attemptTimeout`, no retry that
   * could not finish by then. The call is not interrupted at it: whoever set it enforces it.
   */
  readonly deadlineAt?: number
  /** Runs before each retry's wait, after the policy's own `onRetry`. */
  readonly onRetry?: (event: RetryEvent<E>) => Effect.Effect<void>
  /** Runs when the call fails for good, after the policy's own `onGiveUp`. */
  readonly onGiveUp?: (event: GiveUpEvent<E>) => Effect.Effect<void>
  /** How this call waits `delay` before retrying after `error` (default `Effect.sleep`). */
  readonly wait?: (delay: Duration.Duration, error: E) => Effect.Effect<void>
}

/**
 * A retry policy: `apply` runs an attempt, and again on a retryable failure, until it succeeds
 * or the policy gives up with the last attempt's own error.
 *
 * @since 0.1.0
 * @category models
 */
export interface Policy<E = unknown> {
  readonly apply: <A, E2 extends E, R>(
    attempt: Effect.Effect<A, E2, R>,
    options?: CallOptions<E2>
  ) => Effect.Effect<A, E2 | DeadlineExceeded, R>
}

/**
 * The backoff as a `Schedule`: exponential from `base` by `factor`, capped at `cap`, jittered
 * per `jitter` (delays in whole milliseconds), recurring `maxAttempts - 1` times. It outputs
 * each delay. The policy adds what depends on the error (Retry-After, budget, deadline).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Retry } from "wiz-effect"
 *
 * // plain Effect retry with the same backoff, retrying everything
 * const retried = (call: Effect.Effect<string, Error>) => Effect.retry(call, Retry.schedule({ maxAttempts: 3 }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const schedule = (options: Backoff = {}): Schedule.Schedule<Duration.Duration> => {
  const factor = options.factor ?? defaults.factor
  const maxAttempts = options.maxAttempts ?? defaults.maxAttempts
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || !(factor >= 1)) {
    throw new RangeError(`Retry: maxAttempts must be an integer >= 1 and factor >= 1 (got ${maxAttempts}, ${factor})`)
  }
  const cap = Duration.toMillis(options.cap ?? defaults.cap)
  const jitter = options.jitter ?? defaults.jitter
  return Schedule.exponential(options.base ?? defaults.base, factor).pipe(
    Schedule.intersect(Schedule.recurs(maxAttempts - 1)),
    Schedule.modifyDelayEffect((_, delay) => jittered(jitter, Math.min(Duration.toMillis(delay), cap))),
    Schedule.delays
  )
}

const jittered = (jitter: Jitter, millis: number): Effect.Effect<Duration.Duration> =>
  jitter === "none"
    ? Effect.succeed(Duration.millis(Math.round(millis)))
    : Effect.map(Random.next, (r) =>
      Duration.millis(Math.round(jitter === "full" ? r * millis : millis / 2 + r * millis / 2)))

const retryAfterOf = (error: unknown): Duration.Duration | undefined =>
  Predicate.hasProperty(error, "retryAfter") && Duration.isDuration(error.retryAfter) ? error.retryAfter : undefined

/**
 * A retry policy with these options. It holds no state of its own (a `budget` carries the
 * shared state), so one policy may serve any number of concurrent calls.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <E = unknown>(options: Options<E> = {}): Policy<E> => {
  const backoff = schedule(options)
  const isRetryable: (error: E) => boolean = options.isRetryable ?? defaults.isRetryable
  const waited: (error: E) => Duration.Duration | undefined = options.waited ?? defaults.waited
  const chargesBudget: (error: E) => boolean = options.chargesBudget ?? defaults.chargesBudget
  const retryAfterMax = Duration.decode(options.retryAfterMax ?? defaults.retryAfterMax)
  const deadline = options.deadline === undefined ? undefined : Duration.decode(options.deadline)
  const deadlineMillis = deadline === undefined ? Infinity : Duration.toMillis(deadline)
  // An attempt timeout that could never fit (infinite, or no shorter than the deadline) would
  // forbid every retry; then a retry only has to start before the deadline.
  const attemptTimeout = options.attemptTimeout === undefined ? Infinity : Duration.toMillis(options.attemptTimeout)
  const { budget } = options

  // The slow path: one per call that failed once, holding that call's attempt count and
  // schedule state.
  const retrying = <A, E2 extends E, R>(
    attempt: Effect.Effect<A, E2, R>,
    startedAt: number,
    call: CallOptions<E2> | undefined
  ) => {
    const deadlineAt = Math.min(startedAt + deadlineMillis, call?.deadlineAt ?? Infinity)
    const attemptMillis = attemptTimeout < deadlineAt - startedAt ? attemptTimeout : undefined
    // The call's hooks are called as its methods, so a call may be a class instance.
    const onRetry = (event: RetryEvent<E2>) => both(options.onRetry?.(event), call?.onRetry?.(event))
    const onGiveUp = (event: GiveUpEvent<E2>) => both(options.onGiveUp?.(event), call?.onGiveUp?.(event))
    let attempts = 1
    let state: unknown = backoff.initial
    let lastError: E2 | undefined

    // A retry may start at `at` only if it can finish (or, without `attemptTimeout`, start)
    // before the deadline.
    const fits = (at: number): boolean =>
      attemptMillis === undefined ? at < deadlineAt : at + attemptMillis <= deadlineAt

    const giveUp = <X extends E2 | DeadlineExceeded>(reason: GiveUpReason, error: X): Effect.Effect<never, X> => {
      const hooks = onGiveUp({ reason, attempts, error })
      return hooks === undefined ? Effect.fail(error) : Effect.zipRight(hooks, Effect.fail(error))
    }

    const decide = (error: E2): Effect.Effect<A, E2 | DeadlineExceeded, R> => {
      lastError = error
      if (!isRetryable(error)) return giveUp("not-retryable", error)
      const retryAfter = retryAfterOf(error)
      if (retryAfter !== undefined && Duration.greaterThan(retryAfter, retryAfterMax)) {
        return giveUp("retry-after-too-long", error)
      }
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.flatMap(backoff.step(now, error, state), ([next, delay, decision]) => {
          state = next
          if (ScheduleDecision.isDone(decision)) return giveUp("max-attempts", error)
          const already = waited(error)
          const spaced = already === undefined ? delay : Duration.subtract(delay, Duration.min(delay, already))
          const wait = retryAfter === undefined ? spaced : Duration.max(spaced, retryAfter)
          if (!fits(now + Duration.toMillis(wait))) return giveUp("deadline", error)
          const retry = pause(error, wait)
          return budget === undefined || !chargesBudget(error)
            ? retry
            : Effect.flatMap(budget.tryWithdraw, (ok) => ok ? retry : giveUp("budget", error))
        }))
    }

    const again = Effect.suspend(() => {
      attempts += 1
      return run()
    })

    const pause = (error: E2, wait: Duration.Duration): Effect.Effect<A, E2 | DeadlineExceeded, R> => {
      const slept = Duration.isZero(wait)
        ? again
        : Effect.zipRight(call?.wait === undefined ? Effect.sleep(wait) : call.wait(wait, error), again)
      const hooks = onRetry({ attempt: attempts + 1, delay: wait, error })
      return hooks === undefined ? slept : Effect.zipRight(hooks, slept)
    }

    // One attempt; with the policy's own deadline it runs under a timeout that ends at it.
    const run = (): Effect.Effect<A, E2 | DeadlineExceeded, R> => {
      if (deadline === undefined) return Effect.catchAll(attempt, decide)
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.matchEffect(
          Effect.timeoutTo(attempt, {
            duration: deadlineAt > now ? durationUntil(now, deadlineAt) : Duration.zero,
            onSuccess: Effect.succeed,
            onTimeout: () =>
              giveUp(
                "deadline",
                new DeadlineExceeded({
                  deadline,
                  attempts,
                  ...(lastError === undefined ? {} : { lastError: describe(lastError) })
                })
              )
          }),
          { onFailure: decide, onSuccess: (result) => result }
        ))
    }

    return { decide, run }
  }

  const apply = <A, E2 extends E, R>(
    attempt: Effect.Effect<A, E2, R>,
    call?: CallOptions<E2>
  ): Effect.Effect<A, E2 | DeadlineExceeded, R> => {
    const first = deadline === undefined
      ? Effect.catchAll(attempt, (error) =>
        call?.deadlineAt === undefined
          ? retrying(attempt, 0, call).decide(error)
          : Effect.flatMap(Clock.currentTimeMillis, (now) => retrying(attempt, now, call).decide(error)))
      : Effect.flatMap(Clock.currentTimeMillis, (startedAt) => retrying(attempt, startedAt, call).run())
    return budget === undefined ? first : budget.counted(first)
  }

  return { apply }
}

/** Both hooks' effects, in order; `undefined` when there are none. */
const both = (first: Effect.Effect<void> | undefined, second: Effect.Effect<void> | undefined): Effect.Effect<void> | undefined =>
  first === undefined ? second : second === undefined ? first : Effect.zipRight(first, second)

/** An error as `ErrorInfo`: its tag and message when it has them. */
const describe = (error: unknown): ErrorInfo.ErrorInfo => ({
  _tag: Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" ? error._tag : "Error",
  message: Predicate.hasProperty(error, "message") && typeof error.message === "string" ? error.message : String(error)
})

/**
 * Runs `self` under `policy`: `Retry.retry(effect, policy)` or `effect.pipe(Retry.retry(policy))`.
 *
 * @since 0.1.0
 * @category combinators
 */
export const retry: {
  <E>(
    policy: Policy<E>
  ): <A, E2 extends E, R>(self: Effect.Effect<A, E2, R>) => Effect.Effect<A, E2 | DeadlineExceeded, R>
  <A, E2 extends E, R, E>(
    self: Effect.Effect<A, E2, R>,
    policy: Policy<E>
  ): Effect.Effect<A, E2 | DeadlineExceeded, R>
} = dual(
  2,
  <A, E2 extends E, R, E>(
    self: Effect.Effect<A, E2, R>,
    policy: Policy<E>
  ): Effect.Effect<A, E2 | DeadlineExceeded, R> => policy.apply(self)
)
