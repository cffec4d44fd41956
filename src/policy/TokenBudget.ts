/**
 * A rate budget over several dimensions at once — requests, tokens (input and output
 * together), input tokens, output tokens — the way LLM providers limit an account (OpenAI: RPM
 * and TPM; Anthropic: RPM, input TPM and output TPM). Each dimension is a token bucket refilled
 * continuously: its level is computed from the `Clock` whenever the budget is touched, so there
 * is no timer per token and no tick. A call that must wait sleeps only when it is at the head of
 * the queue, until the moment its cost fits, and is re-planned when a refund or a provider's
 * report changes that moment.
 *
 * - `reserve(cost)` waits in strict FIFO order until the whole cost fits in every dimension and
 *   takes it; a later, smaller cost never overtakes an earlier, larger one (no starvation).
 * - `settle(actual)` on the reservation refunds (or charges) the difference once the real usage
 *   is known: reserve `prompt + maxTokens`, settle with the usage, and the unused part is free
 *   again at once for whoever waits.
 * - An interrupted waiter takes nothing; a granted waiter interrupted before it could use its
 *   reservation gives it back whole.
 * - A cost larger than a dimension's capacity could never fit: it fails at once with
 *   {@link BudgetExceeded} (Effect 3's `RateLimiter` waits forever on such a call, and refills
 *   one token per tick — ~850 tokens/s at a 600k/min limit — which is why this is not built on
 *   it).
 * - `adopt(report)` takes a provider's own word (`AiModel.RateLimits`: limit, remaining, reset
 *   per dimension, as on every completion and on a 429): a client that was never told its
 *   limits learns them from its first answer and slows down *before* it is refused, and the
 *   level follows what the provider says is left. `meter(request)` does all of it around one
 *   model call.
 *
 * Limits you give are your own ceiling (give less than the provider's to share a key with other
 * clients): a report can lower the budget below them, never raise it above.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel, TokenBudget } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   // 500 requests and 200k tokens a minute; or no limits at all, learned from the provider
 *   const budget = yield* TokenBudget.make({ limits: { requests: 500, tokens: 200_000 } })
 *   const request = new AiModel.CompletionRequest({ prompt: "Summarise: ...", maxTokens: 256 })
 *   // waits its turn, reserves prompt + 256 tokens, settles with the usage, adopts the report
 *   return yield* budget.meter(request)(model.generate(request))
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Duration, Effect, Option, Predicate, Schema } from "effect"
import { durationUntil } from "../internal/sleepUntil.js"
import { WaitQueue } from "../internal/waitQueue.js"
import * as AiModel from "../model/AiModel.js"
import * as Tokenizer from "../model/Tokenizer.js"

/**
 * What a budget counts: the same names a provider's report and its `RateLimited` use.
 *
 * @since 0.1.0
 * @category models
 */
export const Dimension = AiModel.LimitKind

/**
 * @since 0.1.0
 * @category models
 */
export type Dimension = AiModel.LimitKind

/**
 * How much of each dimension a call takes. A dimension left out costs nothing.
 *
 * @since 0.1.0
 * @category models
 */
export type Cost = { readonly [K in Dimension]?: number }

/**
 * One dimension's limit: `limit` per `per` (default: a minute), refilled continuously, with at
 * most `burst` (default: `limit`) available at once.
 *
 * @since 0.1.0
 * @category models
 */
export interface Limit {
  readonly limit: number
  readonly per?: Duration.DurationInput
  readonly burst?: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Your limits, per dimension: a number is that much per minute. A dimension without a limit is
   * not limited until a provider's report gives it one.
   */
  readonly limits?: { readonly [K in Dimension]?: number | Limit }
  /** The period a provider's reported `limit` is per (RPM and TPM are per minute). */
  readonly reportedPer?: Duration.DurationInput
  /**
   * Until the first answer, let one reservation through at a time: before any report, the
   * budget does not know the limits, and a burst of callers would all pass it. The first
   * settle (or report) ends this; a released reservation lets the next caller probe. By
   * default on when no `limits` are given.
   */
  readonly probe?: boolean
  /**
   * For `meter`: whether a failed call's reservation is returned whole, because the provider
   * refused the request before serving it. Otherwise (and on interruption) the reservation is
   * kept: the provider may have counted it.
   */
  readonly refundOn?: (error: unknown) => boolean
  /**
   * Whether a 429 on a dimension whose limit the provider never reported holds that dimension
   * until its `retryAfter`, like one on a reported limit does. On by default: the provider said
   * nothing frees before. Off, such a 429 teaches the budget nothing, and only the refused call
   * waits (its retry does) — for providers whose 429s are per request. A limit you gave does not
   * count as reported: it is your own ceiling and says nothing of the provider's window.
   */
  readonly holdUnknown?: boolean
}

const refusedTags: ReadonlySet<string> = new Set([
  "RateLimited",
  "Overloaded",
  "Unavailable",
  "InvalidRequest",
  "QuotaExhausted",
  "AuthenticationFailed",
  "CircuitOpen",
  "BulkheadFull"
])

/**
 * `reportedPer: 1 minute` (both OpenAI and Anthropic define their limits per minute), a
 * `Limit`'s `per`: 1 minute, `probe`: on when no `limits` are given, and `refundOn`: the errors that say the request was refused before
 * it was served — `RateLimited`, `Overloaded`, `Unavailable`, `InvalidRequest`, `QuotaExhausted`,
 * `AuthenticationFailed`, and our own `CircuitOpen` and `BulkheadFull` (never sent). A timeout,
 * a server error or a stream cut short keep the charge: the provider may have counted them.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  reportedPer: Duration.minutes(1),
  per: Duration.minutes(1),
  refundOn: (error: unknown): boolean =>
    Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" && refusedTags.has(error._tag)
} as const

/**
 * A cost can never fit: it is more than the `limit` (the capacity) of one dimension. Waiting
 * would never end, so the call fails at once.
 *
 * @since 0.1.0
 * @category errors
 */
export class BudgetExceeded extends Schema.TaggedError<BudgetExceeded>()("BudgetExceeded", {
  dimension: Dimension,
  cost: Schema.Number,
  limit: Schema.Number
}) {
  override get message(): string {
    return `a cost of ${this.cost} ${this.dimension} can never fit a budget of ${this.limit}`
  }
}

/**
 * One dimension as the budget sees it now.
 *
 * @since 0.1.0
 * @category models
 */
export interface DimensionState {
  /** At most this much at once (the bucket's size). */
  readonly capacity: number
  /** Available now (negative while a charge above the reservation is paid off). */
  readonly available: number
  /** Refill per second. */
  readonly perSecond: number
  /** Time left, in milliseconds, in which a 429's `retryAfter` holds it whatever its level; absent when none does. */
  readonly heldMillis?: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface State {
  /** The limited dimensions; one not limited yet is absent. */
  readonly dimensions: { readonly [K in Dimension]?: DimensionState }
  /** Callers waiting for their cost to fit. */
  readonly waiting: number
  /**
   * A shared budget: the store, how many processes share it (seen in the last few seconds),
   * and whether this process is on it now (`"shared"`) or went on alone (`"local"`).
   */
  readonly shared?: { readonly store: string; readonly processes: number; readonly mode: "shared" | "local" }
}

/**
 * A cost taken from the budget. Settle it once the real usage is known (with its own `cost`
 * to keep it as it is), or release it when the call never happened; only the first of the two
 * counts. Settle or release every reservation: a budget still probing for its limits waits for
 * its first reservation to end.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reservation {
  readonly cost: Cost
  /**
   * Refunds what was reserved beyond `actual`, or charges what `actual` takes beyond the
   * reservation. A dimension absent from `actual` keeps its reserved cost.
   */
  readonly settle: (actual: Cost) => Effect.Effect<void>
  /** Returns the whole reservation. */
  readonly release: Effect.Effect<void>
}

/**
 * A budget. `StoreError` is what the store of a shared budget may fail with under
 * `onStoreError: "fail"` (`SharedStore.StoreUnavailable`); `never` for the in-memory one.
 *
 * @since 0.1.0
 * @category models
 */
export interface TokenBudget<StoreError = never> {
  /**
   * Waits in FIFO order until `cost` fits in every dimension, then takes it. Fails at once with
   * {@link BudgetExceeded} when it can never fit. Every value must be a finite number `>= 0`;
   * anything else is a defect (`RangeError`).
   */
  readonly reserve: (cost: Cost) => Effect.Effect<Reservation, BudgetExceeded | StoreError>
  /**
   * Takes a provider's report: each dimension with a `limit` gets that capacity (refilled at
   * `limit` per `reportedPer`, below your own limit if you gave one), and the level drops to
   * the `remaining` the provider reports when that is lower than the budget's own figure. A
   * longer `reset` than the budget's own refill would take lowers the refill rate to match; a
   * shorter one refills faster until then, so that when the provider says its window is whole
   * again (after a 429, say), the budget is too and lets calls through.
   */
  readonly adopt: (report: AiModel.RateLimits) => Effect.Effect<void>
  /**
   * Takes a 429: adopts its report, and holds its dimension until its `retryAfter` has passed
   * (the provider said nothing frees before).
   */
  readonly refused: (error: AiModel.RateLimited) => Effect.Effect<void>
  /**
   * Runs one model call inside the budget: reserves {@link requestCost} (waiting its turn),
   * runs `attempt`, adopts the completion's report and settles with its usage; on a failure
   * `refundOn` accepts, takes a `RateLimited`'s report and `retryAfter` and returns the
   * reservation; on any other failure or an interruption keeps it. `onWaited` hears how long
   * the call waited for its turn, when it waited at all. A shared budget whose store failed
   * under `onStoreError: "fail"` fails with its `StoreError` (the in-memory one never fails so).
   */
  readonly meter: (
    request: AiModel.CompletionRequest,
    onWaited?: (waitedMillis: number, cost: Cost) => Effect.Effect<void>
  ) => <E, R>(
    attempt: Effect.Effect<AiModel.Completion, E, R>
  ) => Effect.Effect<AiModel.Completion, E | BudgetExceeded | StoreError, R>
  /** What the budget holds right now. */
  readonly state: Effect.Effect<State>
}

/**
 * What a completion request reserves: one request, its prompt (and system, and continuation)
 * tokens by the {@link Tokenizer}, and `maxTokens` of output — the most it can take. A
 * continuation is sent as input, so it is charged as input (its `maxTokens` still bounds the
 * whole answer, so the output reserved is an upper bound the settlement refunds).
 *
 * @since 0.1.0
 * @category constructors
 */
export const requestCost = (request: AiModel.CompletionRequest): Cost => {
  const input = Tokenizer.count(request.prompt) + (request.system === undefined ? 0 : Tokenizer.count(request.system)) +
    (request.continuation === undefined ? 0 : Tokenizer.count(request.continuation))
  return { requests: 1, tokens: input + request.maxTokens, inputTokens: input, outputTokens: request.maxTokens }
}

/**
 * What a finished call really took, from its usage.
 *
 * @since 0.1.0
 * @category constructors
 */
export const usageCost = (usage: AiModel.Usage): Cost => ({
  requests: 1,
  tokens: usage.promptTokens + usage.completionTokens,
  inputTokens: usage.promptTokens,
  outputTokens: usage.completionTokens
})

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

/**
 * The dimensions in the order of {@link amountsOf}.
 *
 * @internal
 */
export const dimensions: ReadonlyArray<Dimension> = ["requests", "tokens", "inputTokens", "outputTokens"]
const count = dimensions.length

/** A cost as four numbers, in the order of `dimensions`. */
type Amounts = Array<number>

/**
 * A cost as four numbers, in the order of {@link dimensions}; a value that is not finite and
 * `>= 0` is a defect (`RangeError`).
 *
 * @internal
 */
export const amountsOf = (cost: Cost): Amounts => {
  const amounts = [cost.requests ?? 0, cost.tokens ?? 0, cost.inputTokens ?? 0, cost.outputTokens ?? 0]
  for (let i = 0; i < count; i++) {
    const amount = amounts[i]!
    if (!(amount >= 0 && amount < Infinity)) {
      throw new RangeError(`TokenBudget: a cost must be finite and >= 0 (got ${dimensions[i]}: ${amount})`)
    }
  }
  return amounts
}

/** Room for float error in refills: a cost fits when it is short by less than this. */
const slack = (amount: number): number => 1e-9 * Math.max(1, amount)

const QUEUED = 0
const HEAD = 1
const GRANTED = 2
const REJECTED = 3

/** A caller waiting for its cost to fit: a node of the FIFO queue. */
class Waiter {
  prev: Waiter | undefined = undefined
  next: Waiter | undefined = undefined
  /** QUEUED (parked behind others), HEAD (planning or sleeping), GRANTED or REJECTED. */
  state = QUEUED
  /** Resumes the parked fiber. */
  resume: ((effect: Effect.Effect<void, BudgetExceeded>) => void) | undefined = undefined
  /** Ends the head's sleep early, so it re-plans. */
  wake: ((effect: Effect.Effect<void>) => void) | undefined = undefined
  /** When the sleeping head planned to wake. */
  wakeAt = Infinity
  error: BudgetExceeded | undefined = undefined
  constructor(readonly amounts: Amounts) {}
}

const toMillis = (input: Duration.DurationInput, what: string): number => {
  const millis = Duration.toMillis(input)
  if (!(millis > 0 && millis < Infinity)) throw new RangeError(`TokenBudget: ${what} must be a positive, finite duration`)
  return millis
}

/**
 * A new budget, full in every dimension you gave a limit. Limits must be positive and finite,
 * durations positive; anything else is a defect (`RangeError`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<TokenBudget> =>
  Effect.clockWith((clock) =>
    Effect.sync(() => {
      const reportedPer = toMillis(options.reportedPer ?? defaults.reportedPer, "reportedPer")
      const refundOn = options.refundOn ?? defaults.refundOn
      const holdUnknown = options.holdUnknown ?? true
      // While probing, one reservation at a time is out: `outstanding` counts them.
      let probing = options.probe ?? Object.values(options.limits ?? {}).every((limit) => limit === undefined)
      let outstanding = 0
      // Your own ceiling per dimension (Infinity: none), and what the provider last reported.
      const ownCapacity: Array<number> = new Array(count).fill(Infinity)
      const ownRate: Array<number> = new Array(count).fill(Infinity)
      const reportedCapacity: Array<number> = new Array(count).fill(Infinity)
      const reportedRate: Array<number> = new Array(count).fill(Infinity)
      // In force: the lower of the two. Capacity Infinity: not limited (level stays Infinity).
      const capacity: Array<number> = new Array(count).fill(Infinity)
      const rate: Array<number> = new Array(count).fill(Infinity) // per millisecond
      const level: Array<number> = new Array(count).fill(Infinity)
      // A 429 said nothing frees before this instant.
      const heldUntil: Array<number> = new Array(count).fill(-Infinity)
      // A report said the window is whole again at `wholeAt`: until then the level refills at
      // `catchUp` (per ms), faster than `rate`, so that it is.
      const wholeAt: Array<number> = new Array(count).fill(-Infinity)
      const catchUp: Array<number> = new Array(count).fill(0)
      let stamp = clock.unsafeCurrentTimeMillis()

      dimensions.forEach((dimension, i) => {
        const given = options.limits?.[dimension]
        if (given === undefined) return
        const limit = typeof given === "number" ? given : given.limit
        const burst = typeof given === "number" ? limit : given.burst ?? limit
        const per = typeof given === "number" ? toMillis(defaults.per, "per") : toMillis(given.per ?? defaults.per, "per")
        if (!(limit > 0 && limit < Infinity && burst > 0 && burst < Infinity)) {
          throw new RangeError(`TokenBudget: ${dimension}: limit and burst must be positive and finite (got ${limit}, ${burst})`)
        }
        ownCapacity[i] = capacity[i] = level[i] = burst
        ownRate[i] = rate[i] = limit / per
      })

      const refill = (now: number): void => {
        if (!(now > stamp)) return
        const from = stamp
        stamp = now
        for (let i = 0; i < count; i++) {
          if (capacity[i]! < Infinity && level[i]! < capacity[i]!) {
            const fast = Math.max(0, Math.min(now, wholeAt[i]!) - from)
            level[i] = Math.min(capacity[i]!, level[i]! + catchUp[i]! * fast + rate[i]! * (now - from - fast))
          }
        }
      }

      const exceeded = (amounts: Amounts): BudgetExceeded | undefined => {
        for (let i = 0; i < count; i++) {
          const amount = amounts[i]!
          if (amount > capacity[i]! + slack(amount)) {
            return new BudgetExceeded({ dimension: dimensions[i]!, cost: amount, limit: capacity[i]! })
          }
        }
        return undefined
      }

      // A 429's hold applies to a dimension even before its limit is known.
      const fits = (amounts: Amounts, now: number): boolean => {
        if (probing && outstanding > 0) return false
        for (let i = 0; i < count; i++) {
          const amount = amounts[i]!
          if (amount === 0) continue
          if (heldUntil[i]! > now || level[i]! + slack(amount) < amount) return false
        }
        return true
      }

      const take = (amounts: Amounts): void => {
        if (probing) outstanding++
        for (let i = 0; i < count; i++) if (capacity[i]! < Infinity) level[i]! -= amounts[i]!
      }

      // When dimension `i` has refilled `short` more, given no other change: at `catchUp` until
      // its window is whole again, at `rate` after.
      const refilledAt = (i: number, short: number, now: number): number => {
        const fast = wholeAt[i]! - now
        if (fast > 0) {
          const caught = catchUp[i]! * fast
          if (caught >= short) return now + short / catchUp[i]!
          return wholeAt[i]! + (short - caught) / rate[i]!
        }
        return now + short / rate[i]!
      }

      // When `amounts` will fit, given no other change: Infinity while a probe is out.
      const fitsAt = (amounts: Amounts, now: number): number => {
        if (probing && outstanding > 0) return Infinity
        let at = now
        for (let i = 0; i < count; i++) {
          const amount = amounts[i]!
          if (amount === 0) continue
          const short = amount - level[i]!
          at = Math.max(at, short > slack(amount) ? refilledAt(i, short, now) : now, heldUntil[i]!)
        }
        return at
      }

      const queue = new WaitQueue<Waiter>()

      const notify = (waiter: Waiter, effect: Effect.Effect<void, BudgetExceeded>): void => {
        const wake = waiter.wake
        if (wake !== undefined) {
          waiter.wake = undefined
          wake(Effect.void) // the head sees its new state when it wakes
          return
        }
        const resume = waiter.resume
        if (resume !== undefined) {
          waiter.resume = undefined
          resume(effect)
        }
      }

      // The head waiter's own loop: take what fits, else sleep until its cost fits (or until
      // something changes the picture), then look again.
      const headLoop = (waiter: Waiter): Effect.Effect<void, BudgetExceeded> =>
        Effect.clockWith((clock) => {
          dispatch(clock.unsafeCurrentTimeMillis())
          if (waiter.state === GRANTED) return Effect.void
          if (waiter.state === REJECTED) return Effect.fail(waiter.error!)
          const now = clock.unsafeCurrentTimeMillis()
          const at = fitsAt(waiter.amounts, now)
          waiter.wakeAt = at
          const woken = Effect.async<void>((wake) => {
            waiter.wake = wake
            return Effect.sync(() => {
              if (waiter.wake === wake) waiter.wake = undefined
            })
          })
          const sleep = at === Infinity ? woken : Effect.raceFirst(Effect.sleep(durationUntil(now, at)), woken)
          return Effect.zipRight(sleep, Effect.suspend(() => headLoop(waiter)))
        })

      // Grants (or rejects) from the head while the head's cost fits (or never can), then makes
      // sure the new head plans with the picture as it is now.
      const dispatch = (now: number): void => {
        refill(now)
        let head = queue.head
        while (head !== undefined) {
          const over = exceeded(head.amounts)
          if (over !== undefined) {
            queue.unlink(head)
            head.state = REJECTED
            head.error = over
            notify(head, Effect.fail(over))
          } else if (fits(head.amounts, now)) {
            take(head.amounts)
            queue.unlink(head)
            head.state = GRANTED
            notify(head, Effect.void)
          } else break
          head = queue.head
        }
        if (head === undefined) return
        if (head.state === QUEUED) {
          head.state = HEAD
          const resume = head.resume
          if (resume !== undefined) {
            head.resume = undefined
            resume(headLoop(head))
          }
        } else if (head.wake !== undefined && fitsAt(head.amounts, now) < head.wakeAt) {
          // it sleeps past the moment its cost now fits: wake it to plan again
          const wake = head.wake
          head.wake = undefined
          wake(Effect.void)
        }
      }

      // Adds `credits` back per dimension (negative ones charge), never above capacity; the
      // caller dispatches. A settle ends the probing; a reservation given back unused lets the
      // next caller probe.
      const credit = (credits: Amounts, now: number, settled: boolean): void => {
        if (settled) probing = false
        else if (probing) outstanding--
        refill(now)
        for (let i = 0; i < count; i++) {
          if (capacity[i]! < Infinity) level[i] = Math.min(capacity[i]!, level[i]! + credits[i]!)
        }
      }

      // A reservation, with the step that closes it without dispatching, so that `meter` can
      // adopt a report before anyone else is let through.
      interface Held extends Reservation {
        readonly close: (settled: boolean, actual: Cost, now: number) => void
      }

      const reservation = (cost: Cost, amounts: Amounts): Held => {
        let open = true
        const close = (settled: boolean, actual: Cost, now: number): void => {
          if (!open) return
          open = false
          // a dimension absent from `actual` keeps its reserved cost
          const used = settled ? amountsOf({ ...cost, ...actual }) : undefined
          credit(used === undefined ? amounts : amounts.map((reserved, i) => reserved - used[i]!), now, settled)
        }
        const closing = (settled: boolean, actual: Cost): Effect.Effect<void> =>
          Effect.clockWith((clock) =>
            Effect.sync(() => {
              const now = clock.unsafeCurrentTimeMillis()
              close(settled, actual, now)
              dispatch(now)
            })
          )
        return { cost, close, settle: (actual) => closing(true, actual), release: closing(false, cost) }
      }

      const reserve = (cost: Cost): Effect.Effect<Held, BudgetExceeded> =>
        Effect.uninterruptibleMask((restore) =>
          Effect.clockWith((clock): Effect.Effect<Held, BudgetExceeded> => {
            const amounts = amountsOf(cost)
            const now = clock.unsafeCurrentTimeMillis()
            refill(now)
            const over = exceeded(amounts)
            if (over !== undefined) return Effect.fail(over)
            if (queue.head === undefined && fits(amounts, now)) {
              take(amounts)
              return Effect.succeed(reservation(cost, amounts))
            }
            const waiter = new Waiter(amounts)
            queue.push(waiter)
            let wait: Effect.Effect<void, BudgetExceeded>
            if (queue.head === waiter) {
              waiter.state = HEAD
              wait = headLoop(waiter)
            } else {
              wait = Effect.async<void, BudgetExceeded>((resume) => {
                if (waiter.state === GRANTED) resume(Effect.void)
                else if (waiter.state === REJECTED) resume(Effect.fail(waiter.error!))
                else if (waiter.state === HEAD) resume(headLoop(waiter))
                else waiter.resume = resume
              })
            }
            return Effect.matchCauseEffect(restore(wait), {
              onFailure: (cause) =>
                Effect.clockWith((clock) => {
                  // Rejected: already out of the queue. Granted, then interrupted: give it back.
                  // Still waiting: leave the queue, and let the next head plan.
                  if (waiter.state === GRANTED) {
                    const now = clock.unsafeCurrentTimeMillis()
                    credit(amounts, now, false)
                    dispatch(now)
                  } else if (waiter.state !== REJECTED) {
                    queue.unlink(waiter)
                    dispatch(clock.unsafeCurrentTimeMillis())
                  }
                  return Effect.failCause(cause)
                }),
              onSuccess: () => Effect.succeed(reservation(cost, amounts))
            })
          })
        )

      const adoptNow = (report: AiModel.RateLimits, now: number): void => {
        probing = false
        refill(now)
        dimensions.forEach((dimension, i) => {
          const window = report[dimension]
          if (window === undefined) return
          if (window.limit !== undefined) {
            reportedCapacity[i] = window.limit
            let perMilli = window.limit / reportedPer
            if (window.remaining !== undefined && window.reset !== undefined) {
              const reset = Duration.toMillis(window.reset)
              // The provider will be whole only after `reset`: refill no faster than that.
              if (reset > 0 && window.remaining < window.limit) {
                perMilli = Math.min(perMilli, (window.limit - window.remaining) / reset)
              }
            }
            reportedRate[i] = perMilli
            const wasLimited = capacity[i]! < Infinity
            capacity[i] = Math.min(ownCapacity[i]!, reportedCapacity[i]!)
            rate[i] = Math.min(ownRate[i]!, reportedRate[i]!)
            level[i] = wasLimited ? Math.min(level[i]!, capacity[i]!) : capacity[i]!
          }
          if (window.remaining !== undefined && capacity[i]! < Infinity) {
            level[i] = Math.min(level[i]!, window.remaining)
          }
          // The provider says the window is whole again after `reset`: the budget is too, then,
          // whatever rate an older, larger report left (calls taken meanwhile still count).
          if (window.reset !== undefined && capacity[i]! < Infinity) {
            const reset = Duration.toMillis(window.reset)
            const missing = capacity[i]! - level[i]!
            if (reset > 0 && missing > 0 && missing / reset > rate[i]!) {
              wholeAt[i] = now + reset
              catchUp[i] = missing / reset
            } else {
              wholeAt[i] = -Infinity
            }
          }
        })
        dispatch(now)
      }

      const adopt = (report: AiModel.RateLimits): Effect.Effect<void> =>
        Effect.clockWith((clock) => Effect.sync(() => adoptNow(report, clock.unsafeCurrentTimeMillis())))

      const refusedNow = (error: AiModel.RateLimited, now: number): void => {
        if (error.retryAfter !== undefined) {
          const i = dimensions.indexOf(error.limit)
          if (holdUnknown || reportedCapacity[i]! < Infinity || error.rateLimits?.[error.limit]?.limit !== undefined) {
            heldUntil[i] = Math.max(heldUntil[i]!, now + Duration.toMillis(error.retryAfter))
          }
        }
        if (error.rateLimits !== undefined) adoptNow(error.rateLimits, now)
        else dispatch(now)
      }

      const refused = (error: AiModel.RateLimited): Effect.Effect<void> =>
        Effect.clockWith((clock) => Effect.sync(() => refusedNow(error, clock.unsafeCurrentTimeMillis())))

      // Closes `held` and takes what the provider said, in one step: the reservation is
      // settled (or given back) first and the report's `remaining` applied last, as the report
      // already counts this call's refund (or never counted a refused call).
      const closeAndLearn = (held: Held, settled: boolean, actual: Cost, learn: (now: number) => void) =>
        Effect.clockWith((clock) =>
          Effect.sync(() => {
            const now = clock.unsafeCurrentTimeMillis()
            held.close(settled, actual, now)
            learn(now)
          })
        )

      const afterFailure = (held: Held) => <E>(cause: Cause.Cause<E>): Effect.Effect<never, E> => {
        const error = Option.getOrUndefined(Cause.failureOption(cause))
        // not refused (or interrupted): it may have been served and counted, so keep it
        const closed = error === undefined || !refundOn(error)
          ? closeAndLearn(held, true, held.cost, dispatch)
          : error instanceof AiModel.RateLimited
          ? closeAndLearn(held, false, held.cost, (now) => refusedNow(error, now))
          : closeAndLearn(held, false, held.cost, dispatch)
        return Effect.zipRight(closed, Effect.failCause(cause))
      }

      // Nothing known yet, nothing to wait for: no dimension limited, none held, no probe, no
      // queue. A call then takes nothing (there is nothing to take from), so `meter` skips the
      // reservation and only listens for what the provider says.
      const unlimited = (now: number): boolean => {
        if (probing || queue.head !== undefined) return false
        for (let i = 0; i < count; i++) if (capacity[i]! < Infinity || heldUntil[i]! > now) return false
        return true
      }
      const learnFromFailure = <E>(cause: Cause.Cause<E>): Effect.Effect<never, E> => {
        const error = Option.getOrUndefined(Cause.failureOption(cause))
        return error instanceof AiModel.RateLimited
          ? Effect.zipRight(refused(error), Effect.failCause(cause))
          : Effect.failCause(cause)
      }
      const learnFromAnswer = (completion: AiModel.Completion): Effect.Effect<AiModel.Completion> =>
        completion.rateLimits === undefined ? Effect.succeed(completion) : Effect.as(adopt(completion.rateLimits), completion)
      /** The two listeners, built once: generic in the error, which they pass on untouched. */
      interface Listening<E> {
        readonly onFailure: (cause: Cause.Cause<E>) => Effect.Effect<never, E>
        readonly onSuccess: (completion: AiModel.Completion) => Effect.Effect<AiModel.Completion>
      }
      const listening: Listening<unknown> = { onFailure: learnFromFailure, onSuccess: learnFromAnswer }

      const meter = (request: AiModel.CompletionRequest, onWaited?: (waitedMillis: number, cost: Cost) => Effect.Effect<void>) => {
        let cost: Cost | undefined
        return <E, R>(
          attempt: Effect.Effect<AiModel.Completion, E, R>
        ): Effect.Effect<AiModel.Completion, E | BudgetExceeded, R> =>
          Effect.suspend(() => {
            const from = clock.unsafeCurrentTimeMillis()
            if (unlimited(from)) return Effect.matchCauseEffect(attempt, listening as Listening<E>)
            const charged = cost ??= requestCost(request)
            return Effect.uninterruptibleMask((restore) =>
              Effect.flatMap(restore(reserve(charged)), (held) => {
                const waited = onWaited === undefined ? 0 : clock.unsafeCurrentTimeMillis() - from
                const run = Effect.matchCauseEffect(restore(attempt), {
                  onFailure: afterFailure(held),
                  onSuccess: (completion) => {
                    const report = completion.rateLimits
                    return Effect.as(
                      closeAndLearn(held, true, usageCost(completion.usage), report === undefined ? dispatch : (now) => adoptNow(report, now)),
                      completion
                    )
                  }
                })
                return waited > 0 ? Effect.zipRight(onWaited!(waited, charged), run) : run
              })
            )
          })
      }

      const budget: TokenBudget = {
        reserve,
        adopt,
        refused,
        meter,
        state: Effect.clockWith((clock) =>
          Effect.sync((): State => {
            const now = clock.unsafeCurrentTimeMillis()
            refill(now)
            const limited: { [K in Dimension]?: DimensionState } = {}
            dimensions.forEach((dimension, i) => {
              if (capacity[i]! < Infinity) {
                const held = heldUntil[i]! > now ? { heldMillis: heldUntil[i]! - now } : {}
                limited[dimension] = { capacity: capacity[i]!, available: level[i]!, perSecond: rate[i]! * 1000, ...held }
              }
            })
            return { dimensions: limited, waiting: queue.size }
          })
        )
      }
      return budget
    })
  )
