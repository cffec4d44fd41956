/**
 * A circuit breaker: after enough failures it stops sending calls to a failing provider for a
 * while, so the provider can recover and callers fail at once (with the time to come back)
 * instead of waiting for a timeout. Shaped like Effect 4's `CircuitBreaker` (`tripPolicy`,
 * `openDuration`, `transitions`, `CircuitOpen`) so moving to Effect 4 stays easy.
 *
 * - **Closed**: calls run; the {@link TripPolicy} decides when the circuit opens —
 *   {@link consecutive} failures in a row, or a failure {@link rate} over a sliding window of
 *   time (old outcomes are forgotten).
 * - **Open**: calls fail with {@link CircuitOpen} (`retryAfter` = time left) until the open time
 *   ends. The open time is `openDuration`; with a `Schedule`, the n-th open of a streak lasts
 *   the schedule's n-th delay. A streak (the backoff count) survives a close and ends once the
 *   circuit has stayed closed as long as it was last open.
 * - **HalfOpen**: at most `halfOpen.probes` calls run at once; every other caller fails at once
 *   with `CircuitOpen` (nobody waits). `successesToClose` successful probes close it, one failed
 *   probe opens it again. An interrupted probe, or one that failed with an error `isFailure`
 *   does not count, frees its slot and decides nothing.
 * - **Isolated**: held open by {@link CircuitBreaker.isolate} until {@link CircuitBreaker.reset}.
 *
 * Every rejection is a `CircuitOpen` whose `retryAfter` says when to come back (Effect 4 has a
 * separate `CircuitHalfOpen` for a busy half-open circuit; here it is `CircuitOpen` too).
 *
 * Fixes the seed's breaker (seed bug 5): it let every concurrent caller through in half-open,
 * never forgot old failures, and read the wall clock (`Date.now`). Here time is read only
 * through Effect's `Clock`, so a breaker is exact under `TestClock`; state changes happen when
 * the clock says so, at the next call or `state` read, with no background fiber.
 *
 * Calls admitted before a state change still run to completion, but their outcomes change
 * nothing. Put retries outside the breaker and timeouts inside it, so it sees one outcome per
 * attempt and an open circuit's `retryAfter` reaches the retry policy.
 *
 * Lean: on the closed path `execute` is a few synchronous checks of plain mutable state and one
 * exit handler (no `Ref`, `Deferred`, `Semaphore` or fiber).
 *
 * @example
 * ```ts
 * import { Effect, Schedule } from "effect"
 * import { CircuitBreaker } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const breaker = yield* CircuitBreaker.make({
 *     name: "gpt",
 *     tripPolicy: CircuitBreaker.rate({ threshold: 0.5, window: "1 minute", minimumCalls: 10 }),
 *     openDuration: Schedule.exponential("10 seconds"),
 *     halfOpen: { probes: 2, successesToClose: 2 }
 *   })
 *   return yield* breaker.execute(Effect.succeed("answer"))
 * })
 * ```
 *
 * @since 0.1.0
 */
import {
  Cause,
  type Clock,
  Duration,
  Effect,
  Exit,
  Option,
  Predicate,
  PubSub,
  Schedule,
  ScheduleDecision,
  ScheduleIntervals,
  Schema,
  Stream
} from "effect"
import { identity } from "effect/Function"
import type { Scope } from "effect"
import { durationUntil, sleepUntil } from "../internal/sleepUntil.js"
import { isPermanent } from "../model/AiModel.js"

// -----------------------------------------------------------------------------
// models
// -----------------------------------------------------------------------------

/**
 * Where a circuit is: `Closed` (calls run), `Open` (calls rejected until the open time ends),
 * `HalfOpen` (a few probe calls run), `Isolated` (held open by hand until `reset`).
 *
 * @since 0.1.0
 * @category models
 */
export const State = Schema.Literal("Closed", "Open", "HalfOpen", "Isolated")

/**
 * @since 0.1.0
 * @category models
 */
export type State = typeof State.Type

/**
 * One change of state, `at` the `Clock` time it happened (for `Open → HalfOpen`, the moment
 * the open time ended, even if first noticed later).
 *
 * @since 0.1.0
 * @category models
 */
export class Transition extends Schema.Class<Transition>("Transition")({
  from: State,
  to: State,
  /** Clock time, in milliseconds. */
  at: Schema.Number,
  /** For a transition to `Open`: the Clock time (ms) it becomes half-open. */
  until: Schema.optional(Schema.Number)
}) {}

/**
 * A transition of the breaker for `key`, from a keyed breaker.
 *
 * @since 0.1.0
 * @category models
 */
export class KeyedTransition extends Schema.Class<KeyedTransition>("KeyedTransition")({
  key: Schema.String,
  transition: Transition
}) {}

/**
 * When a closed circuit opens: see {@link consecutive} and {@link rate}.
 *
 * @since 0.1.0
 * @category trip policies
 */
export type TripPolicy = TripPolicy.Consecutive | TripPolicy.Rate

/**
 * @since 0.1.0
 * @category trip policies
 */
export declare namespace TripPolicy {
  /**
   * @since 0.1.0
   * @category trip policies
   */
  export interface Consecutive {
    readonly _tag: "Consecutive"
    readonly failures: number
  }
  /**
   * @since 0.1.0
   * @category trip policies
   */
  export interface Rate {
    readonly _tag: "Rate"
    readonly threshold: number
    readonly window: Duration.Duration
    readonly calls: number
    readonly minimumCalls: number
  }
}

/**
 * Open after `failures` counted failures in a row; a success starts the count again.
 *
 * @since 0.1.0
 * @category trip policies
 */
export const consecutive = (failures: number): TripPolicy => ({ _tag: "Consecutive", failures })

/**
 * Open when, among the last `calls` outcomes that are at most `window` old, at least
 * `minimumCalls` are counted and the share that failed is at least `threshold`
 * (0 < threshold ≤ 1). A sustained failure rate trips it; a short run of fast failures among
 * many successes does not (with many calls in flight, fast failures such as a 529 come back
 * before the successes that started with them, so failures arrive in runs — which is what
 * trips {@link consecutive} at a 20% fault rate). Counting the last `calls` outcomes makes it
 * trip within a few dozen calls of an outage at any traffic, and the `window` forgets old
 * outcomes (seed bug 5), each exactly `window` after it happened. Calls still in flight count
 * in the share as not failed (yet): when a batch starts, or its calls are let through again,
 * the first outcomes are the fast failures, and the successes that started with them are still
 * on the wire (at a 40% fault rate, 20 fast 529s opened the circuit in the first 0.4 s of a
 * batch whose sustained rate was half the threshold; issue 17.9). Checked when a failure is
 * recorded. Defaults: `calls` 100, `window` 1 minute, `minimumCalls` 20 — the shape of
 * resilience4j's and Effect 4's count-based rate (threshold 0.5 over the last 100 calls), with
 * a smaller minimum so a quiet batch still trips on an outage.
 *
 * @since 0.1.0
 * @category trip policies
 */
export const rate = (options: {
  readonly threshold: number
  readonly window?: Duration.DurationInput
  readonly calls?: number
  readonly minimumCalls?: number
}): TripPolicy => ({
  _tag: "Rate",
  threshold: options.threshold,
  window: Duration.decode(options.window ?? rateDefaults.window),
  calls: options.calls ?? rateDefaults.calls,
  minimumCalls: options.minimumCalls ?? rateDefaults.minimumCalls
})

const rateDefaults = { window: Duration.minutes(1), calls: 100, minimumCalls: 20 } as const

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** When a closed circuit opens. */
  readonly tripPolicy?: TripPolicy
  /**
   * How long an open lasts: a fixed duration, or a `Schedule` whose n-th delay is the length
   * of the n-th open of a streak (e.g. `Schedule.exponential("10 seconds")`; it is fed n).
   * When the schedule ends, its last delay repeats.
   */
  readonly openDuration?: Duration.DurationInput | Schedule.Schedule<unknown, number>
  readonly halfOpen?: {
    /** Probe calls running at once in half-open. */
    readonly probes?: number
    /** Successful probes that close the circuit. */
    readonly successesToClose?: number
  }
  /**
   * Whether a failure says the provider is unhealthy. Errors it rejects are ignored: they
   * count neither as failures nor as successes. Defects always count; interruptions never do.
   */
  readonly isFailure?: (error: unknown) => boolean
  /** Reported in {@link CircuitOpen}. */
  readonly name?: string
  /**
   * Called synchronously at each transition, before the call that caused it returns, so a
   * listener sees transitions in order with the work (the `transitions` stream is read by
   * another fiber, later). Keep it short and non-throwing.
   */
  readonly onTransition?: (transition: Transition) => void
}

/**
 * The defaults, each chosen so that a batch keeps moving under everyday provider faults:
 *
 * - `tripPolicy: rate({ threshold: 0.5, calls: 100, window: "1 minute", minimumCalls: 20 })` —
 *   a sustained failure rate (resilience4j and Effect 4: 50% of the last 100 calls), not
 *   `consecutive(5)`, which at 64 calls in flight trips on 20% independent faults because fast
 *   failures come back in runs.
 * - `openDuration: 5 s` — Polly v8's break duration and LiteLLM's cooldown; long enough for a
 *   provider to shed load, short enough that a recovered provider is used again within seconds.
 * - `halfOpen: { probes: 1, successesToClose: 1 }` — one probe at a time; callers that
 *   {@link CircuitBreaker.executeWaiting wait} resume on its verdict, so recovery costs one call.
 * - `isFailure`: every error counts except a `RateLimited` (a 429 is the provider asking us to
 *   slow down, not being down: the retry policy waits out its Retry-After) and the permanent
 *   errors of `AiModel.isPermanent` (`InvalidRequest`, `QuotaExhausted`,
 *   `AuthenticationFailed`: the caller's fault or account, which no wait mends — they fail
 *   their own call at once instead of making everyone wait on an open circuit).
 * - `name: "CircuitBreaker"`.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  tripPolicy: rate({ threshold: 0.5 }),
  openDuration: Duration.seconds(5),
  halfOpen: { probes: 1, successesToClose: 1 },
  isFailure: (error: unknown): boolean => !isPermanent(error) && !Predicate.isTagged(error, "RateLimited"),
  name: "CircuitBreaker",
  rate: rateDefaults
} as const

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

/**
 * The circuit rejected the call without running it. `retryAfter` is when coming back may
 * help: while open, the time left until half-open; while half-open with every probe slot
 * taken, the length of the open that just ended (a probe's verdict is unknown in advance;
 * if it fails, the circuit reopens for at least that long, so sooner rarely helps); while
 * isolated, `Duration.infinity` (only `reset` ends it).
 *
 * @since 0.1.0
 * @category errors
 */
export class CircuitOpen extends Schema.TaggedError<CircuitOpen>()("CircuitOpen", {
  /** The breaker that refused: its `name`, or `name/key` in a keyed breaker. */
  breaker: Schema.String,
  retryAfter: Schema.Duration
}) {
  override get message(): string {
    return Duration.isFinite(this.retryAfter)
      ? `${this.breaker}: circuit open, retry after ${Duration.format(this.retryAfter)}`
      : `${this.breaker}: circuit isolated until reset`
  }
}

// -----------------------------------------------------------------------------
// breaker
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface CircuitBreaker {
  /** Run `self` if the circuit lets it through, else fail at once with {@link CircuitOpen}. */
  readonly execute: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | CircuitOpen, R>
  /**
   * Run `self` once the circuit lets it through, waiting as long as it refuses: while open,
   * until its open time is up; while half-open with every probe slot taken, until the probe's
   * verdict (a success closes it and every waiter runs; a failure reopens it); while isolated,
   * until `reset`. Waiting costs no attempt and no call, so a retry policy outside never sees
   * the refusal. Interrupting the caller ends the wait at once (bound it with a deadline).
   * `around` wraps each wait, e.g. to report it or to release a slot while waiting.
   */
  readonly executeWaiting: <A, E, R, E2 = never>(
    self: Effect.Effect<A, E, R>,
    around?: WaitHook<E2>
  ) => Effect.Effect<A, E | E2, R>
  /** The state now (an open circuit whose time is up becomes half-open here). */
  readonly state: Effect.Effect<State>
  /** Every transition from the moment the stream is run; it never ends by itself. */
  readonly transitions: Stream.Stream<Transition>
  /**
   * Subscribe now, in a scope: the stream then has every transition from this point on, even
   * those before it is run (`transitions` only starts listening when it runs).
   */
  readonly subscribe: Effect.Effect<Stream.Stream<Transition>, never, Scope.Scope>
  /** Hold the circuit open (`Isolated`) until `reset`. */
  readonly isolate: Effect.Effect<void>
  /** Close the circuit and forget every count, the backoff streak included. */
  readonly reset: Effect.Effect<void>
}

/**
 * Wraps each wait of {@link CircuitBreaker.executeWaiting}: `wait` is the wait itself,
 * `refused` the refusal that caused it (its `retryAfter` says how long an open circuit has
 * left). The hook runs `wait`, or ends the wait early by failing (a deadline, say).
 *
 * @since 0.1.0
 * @category models
 */
export type WaitHook<E = never> = (wait: Effect.Effect<void>, refused: CircuitOpen) => Effect.Effect<void, E>

/**
 * A new, closed circuit breaker. It needs no scope: no fiber runs, and its `transitions`
 * PubSub is dropped with the breaker.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<CircuitBreaker> =>
  Effect.suspend(() => {
    const config = resolve(options)
    return Effect.map(PubSub.unbounded<Transition>(), (pubsub) =>
      unsafeMake(config, config.name, (transition) => {
        pubsub.unsafeOffer(transition)
      }, Effect.map(PubSub.subscribe(pubsub), Stream.fromQueue)))
  })

/**
 * One breaker per key (per model, per endpoint), each with the same options, created on first
 * use and kept for the keyed breaker's life. A breaker's `CircuitOpen` names its key
 * (`name/key` when `name` is given).
 *
 * @since 0.1.0
 * @category models
 */
export interface Keyed {
  /** The breaker for `key`. */
  readonly get: (key: string) => Effect.Effect<CircuitBreaker>
  /** `execute` on the breaker for `key`. */
  readonly execute: (key: string) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | CircuitOpen, R>
  /** `executeWaiting` on the breaker for `key`. */
  readonly executeWaiting: (
    key: string
  ) => <A, E, R, E2 = never>(self: Effect.Effect<A, E, R>, around?: WaitHook<E2>) => Effect.Effect<A, E | E2, R>
  /** The state of the breaker for `key`. */
  readonly state: (key: string) => Effect.Effect<State>
  /** Every breaker's transitions, with its key, from the moment the stream is run. */
  readonly transitions: Stream.Stream<KeyedTransition>
  /** Subscribe now, in a scope, to every breaker's transitions from this point on. */
  readonly subscribe: Effect.Effect<Stream.Stream<KeyedTransition>, never, Scope.Scope>
}

/**
 * The options of a keyed breaker: those of each breaker, with `onTransition` told the key.
 *
 * @since 0.1.0
 * @category models
 */
export interface KeyedOptions extends Omit<Options, "onTransition"> {
  readonly onTransition?: (key: string, transition: Transition) => void
}

/**
 * A new keyed breaker: independent circuits, one per key, sharing `options`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeKeyed = (options: KeyedOptions = {}): Effect.Effect<Keyed> => makeKeyedLinked(options)

/**
 * A breaker's link to the copies of it in other processes (`RedisStore`): its own transitions
 * are announced, and in half-open a probe also needs one of the probe slots shared by every
 * process (`undefined`: all taken; else the effect that frees it).
 *
 * @internal
 */
export interface Link {
  readonly announce: (transition: Transition) => void
  readonly probe: Effect.Effect<Effect.Effect<void> | undefined>
  /** How often a caller waiting on a half-open circuit looks again (a prober elsewhere may die). */
  readonly pollMillis: number
}

/**
 * A keyed breaker that can be told of a transition made elsewhere: `follow(key, to, millis)`
 * takes it (for `Open`, `millis` is what is left of its open time) without announcing it.
 *
 * @internal
 */
export interface Linked extends Keyed {
  readonly follow: (key: string, to: State, millis: number) => Effect.Effect<void>
}

/**
 * A keyed breaker whose breakers are linked to other processes through `link(key)`.
 *
 * @internal
 */
export const makeKeyedLinked = (options: KeyedOptions = {}, link?: (key: string) => Link): Effect.Effect<Linked> =>
  Effect.suspend(() => {
    const { onTransition, ...shared } = options
    const config = resolve(shared)
    return Effect.map(PubSub.unbounded<KeyedTransition>(), (pubsub) => {
      const subscribe = Effect.map(PubSub.subscribe(pubsub), Stream.fromQueue)
      const breakers = new Map<string, Internal>()
      const lookup = (key: string): Internal => {
        let breaker = breakers.get(key)
        if (breaker === undefined) {
          breaker = unsafeMake(
            onTransition === undefined ? config : { ...config, onTransition: (transition) => onTransition(key, transition) },
            options.name === undefined ? key : `${options.name}/${key}`,
            (transition) => {
              pubsub.unsafeOffer(new KeyedTransition({ key, transition }))
            },
            Effect.map(subscribe, Stream.filterMap((keyed) => keyed.key === key ? Option.some(keyed.transition) : Option.none())),
            link?.(key)
          )
          breakers.set(key, breaker)
        }
        return breaker
      }
      const keyed: Linked = {
        follow: (key, to, millis) => Effect.suspend(() => lookup(key).follow(to, millis)),
        get: (key) => Effect.sync(() => lookup(key)),
        execute: (key) => (self) => Effect.suspend(() => lookup(key).execute(self)),
        executeWaiting: (key) => (self, around) => Effect.suspend(() => lookup(key).executeWaiting(self, around)),
        state: (key) => Effect.suspend(() => lookup(key).state),
        transitions: Stream.unwrapScoped(subscribe),
        subscribe
      }
      return keyed
    })
  })

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

interface Config {
  readonly name: string
  readonly tripPolicy: TripPolicy
  readonly openMillis: number
  readonly openSchedule: Schedule.Schedule<unknown, number> | undefined
  readonly probes: number
  readonly successesToClose: number
  readonly isFailure: (error: unknown) => boolean
  readonly onTransition: ((transition: Transition) => void) | undefined
}

const isCount = (n: number, min: number): boolean => Number.isInteger(n) && n >= min

const resolve = (options: Options): Config => {
  const tripPolicy = options.tripPolicy ?? defaults.tripPolicy
  const probes = options.halfOpen?.probes ?? defaults.halfOpen.probes
  const successesToClose = options.halfOpen?.successesToClose ?? defaults.halfOpen.successesToClose
  const open = options.openDuration ?? defaults.openDuration
  const openSchedule = Schedule.isSchedule(open) ? open : undefined
  const openMillis = Schedule.isSchedule(open) ? Duration.toMillis(defaults.openDuration) : Duration.toMillis(open)
  if (
    (tripPolicy._tag === "Consecutive" && !isCount(tripPolicy.failures, 1)) ||
    (tripPolicy._tag === "Rate" && !(tripPolicy.threshold > 0 && tripPolicy.threshold <= 1 &&
      Duration.toMillis(tripPolicy.window) > 0 && isCount(tripPolicy.calls, 1) &&
      isCount(tripPolicy.minimumCalls, 1) && tripPolicy.minimumCalls <= tripPolicy.calls)) ||
    !isCount(probes, 1) || !isCount(successesToClose, 1) || !(openMillis >= 0)
  ) {
    throw new RangeError(
      "CircuitBreaker: consecutive failures, probes, successesToClose, calls and minimumCalls must be integers >= 1 " +
        "(minimumCalls <= calls), a rate threshold in (0, 1], a window > 0 and an openDuration >= 0"
    )
  }
  return {
    name: options.name ?? defaults.name,
    tripPolicy,
    openMillis,
    openSchedule,
    probes,
    successesToClose,
    isFailure: options.isFailure ?? defaults.isFailure,
    onTransition: options.onTransition
  }
}

/**
 * The last `capacity` outcomes of the rate policy with their Clock times, oldest first, in a
 * ring; `expire` drops those `window` old or older. Counts are kept as outcomes come and go,
 * so a check is O(1) amortized.
 */
class Outcomes {
  private readonly times: Array<number> = []
  private readonly failed: Array<boolean> = []
  private head = 0
  size = 0
  failures = 0
  constructor(readonly capacity: number, readonly window: number) {}

  add(now: number, failed: boolean): void {
    if (this.size === this.capacity) this.dropOldest()
    const i = (this.head + this.size) % this.capacity
    this.times[i] = now
    this.failed[i] = failed
    this.size++
    if (failed) this.failures++
  }

  expire(now: number): void {
    while (this.size > 0 && now - this.times[this.head]! >= this.window) this.dropOldest()
  }

  clear(): void {
    this.head = 0
    this.size = 0
    this.failures = 0
  }

  private dropOldest(): void {
    if (this.failed[this.head]) this.failures--
    this.head = (this.head + 1) % this.capacity
    this.size--
  }
}

/** The outcome of a finished call, as the breaker sees it. */
type Verdict = "success" | "failure" | "ignored"


/** A breaker, and the step that takes a transition made elsewhere. */
interface Internal extends CircuitBreaker {
  readonly follow: (to: State, millis: number) => Effect.Effect<void>
}

const unsafeMake = (
  config: Config,
  name: string,
  publish: (transition: Transition) => void,
  subscribe: Effect.Effect<Stream.Stream<Transition>, never, Scope.Scope>,
  link?: Link
): Internal => {
  const { isFailure, openSchedule, probes, successesToClose, tripPolicy } = config

  let state: State = "Closed"
  /** Bumped on every transition: a call's verdict counts only in the epoch that admitted it. */
  let epoch = 0
  /** A trip is waiting for its open length (a `Schedule` step); verdicts meanwhile are dropped. */
  let pending = false
  let openUntil = 0
  /** Length of the current or last open. */
  let lastOpenMillis = 0
  /** Opens in the current streak, and the open schedule's state for the next one. */
  let streak = 0
  let scheduleState: unknown = openSchedule?.initial
  let closedAt = 0
  // half-open
  let probesInFlight = 0
  let probeSuccesses = 0
  // closed: consecutive
  let failuresInARow = 0
  // closed: rate, and the calls of this epoch still in flight
  let inFlight = 0
  const outcomes = tripPolicy._tag === "Rate"
    ? new Outcomes(tripPolicy.calls, Duration.toMillis(tripPolicy.window))
    : new Outcomes(1, 1) // unused
  /** Callers of `executeWaiting` waiting for the circuit to change; allocated when one waits. */
  let waiters: Set<() => void> | undefined
  /** Bumped at each wake, so a waiter that registers late still sees a change it missed. */
  let changes = 0

  const wake = (): void => {
    changes++
    if (waiters === undefined) return
    const woken = waiters
    waiters = undefined
    for (const resume of woken) resume()
  }

  const transition = (to: State, at: number): void => {
    const from = state
    state = to
    epoch++
    pending = false
    inFlight = 0
    probesInFlight = 0
    probeSuccesses = 0
    const event = new Transition(to === "Open" ? { from, to, at, until: openUntil } : { from, to, at }, true)
    config.onTransition?.(event)
    publish(event)
    // Half-open follows from the open time in every process: only the others are told.
    if (link !== undefined && !following && to !== "HalfOpen") link.announce(event)
    wake()
  }
  /** Set while a transition made elsewhere is taken, so it is not announced back. */
  let following = false

  const clearCounts = (): void => {
    failuresInARow = 0
    outcomes.clear()
  }

  /** Open → HalfOpen once the open time is over. */
  const refresh = (now: number): void => {
    if (state === "Open" && now >= openUntil) transition("HalfOpen", openUntil)
  }

  const rateExceeded = (now: number, policy: TripPolicy.Rate, window: Outcomes): boolean => {
    window.expire(now)
    return window.size >= policy.minimumCalls && window.failures / (window.size + inFlight) >= policy.threshold
  }

  /** The length of the open number `n` of a streak, and the schedule state after it. */
  const openLength = (now: number, n: number, previous: unknown): Effect.Effect<readonly [number, unknown]> =>
    openSchedule === undefined
      ? Effect.succeed([config.openMillis, previous] as const)
      : Effect.map(openSchedule.step(now, n, previous), ([next, , decision]) =>
        ScheduleDecision.isDone(decision)
          ? [n > 1 ? lastOpenMillis : config.openMillis, previous] as const
          : [Math.max(0, ScheduleIntervals.start(decision.intervals) - now), next] as const)

  /**
   * Open the circuit (from Closed or HalfOpen) at `now`, if it is still in the epoch `ticket`
   * that decided so. Uninterruptible, so a trip never stops halfway with `pending` set.
   */
  const trip = (now: number, ticket: number): Effect.Effect<void> =>
    Effect.uninterruptible(Effect.suspend(() => {
      if (ticket !== epoch || pending) return Effect.void
      // A streak ends once the circuit has stayed closed as long as it was last open.
      const fresh = state === "Closed" && now - closedAt >= lastOpenMillis
      const n = fresh ? 1 : streak + 1
      pending = true
      return Effect.map(openLength(now, n, fresh ? openSchedule?.initial : scheduleState), ([millis, next]) => {
        if (epoch !== ticket) return // isolated or reset meanwhile
        streak = n
        scheduleState = next
        lastOpenMillis = millis
        openUntil = now + millis
        transition("Open", now)
      })
    }))

  const probeVerdict = (ticket: number, verdict: Verdict): Effect.Effect<void> =>
    Effect.clockWith((clock) =>
      Effect.suspend(() => {
        if (ticket !== epoch || pending) return Effect.void
        const now = clock.unsafeCurrentTimeMillis()
        if (verdict === "failure") return trip(now, ticket)
        probesInFlight--
        if (verdict === "success" && ++probeSuccesses >= successesToClose) {
          transition("Closed", now)
          closedAt = now
          clearCounts()
        } else {
          wake() // a probe slot is free again
        }
        return Effect.void
      })
    )

  const verdictOf = <E>(cause: Cause.Cause<E>): Verdict => {
    if (Cause.isInterruptedOnly(cause)) return "ignored"
    if (Cause.isDie(cause)) return "failure"
    const error = Cause.failureOption(cause)
    return Option.isSome(error) && isFailure(error.value) ? "failure" : "ignored"
  }

  /** Run `self` and hand its verdict to `judge`. */
  const guarded = <A, E, R>(
    self: Effect.Effect<A, E, R>,
    judge: (ticket: number, verdict: Verdict) => Effect.Effect<void>,
    ticket: number
  ): Effect.Effect<A, E, R> =>
    Effect.matchCauseEffect(self, {
      onFailure: (cause) => Effect.zipRight(judge(ticket, verdictOf(cause)), Effect.failCause(cause)),
      onSuccess: (value) => Effect.as(judge(ticket, "success"), value)
    })

  /**
   * A call admitted while closed, kept cheap: its outcome is counted synchronously on `clock`
   * (read once, when the call started), so a success costs one handler and no effect of its own.
   * One handler, on the call's `Exit` however it ends (an interrupted call included), both
   * takes the call out of those in flight and counts its outcome: each closure or frame a call
   * holds while it is in flight costs a few hundred bytes (bench/lean.ts measures the heap per
   * in-flight task; a finalizer beside an `Effect.exit` handler cost ~1 KB of it).
   */
  const closedCall = <A, E, R>(self: Effect.Effect<A, E, R>, clock: Clock.Clock): Effect.Effect<A, E, R> => {
    const ticket = epoch
    inFlight++
    return Effect.onExit(self, (exit) => {
      if (ticket !== epoch) return Effect.void
      inFlight--
      if (pending) return Effect.void
      if (Exit.isSuccess(exit)) {
        if (tripPolicy._tag === "Consecutive") failuresInARow = 0
        else outcomes.add(clock.unsafeCurrentTimeMillis(), false)
        return Effect.void
      }
      if (verdictOf(exit.cause) === "ignored") return Effect.void
      const now = clock.unsafeCurrentTimeMillis()
      let tripped: boolean
      if (tripPolicy._tag === "Consecutive") {
        tripped = ++failuresInARow >= tripPolicy.failures
      } else {
        outcomes.add(now, true)
        tripped = rateExceeded(now, tripPolicy, outcomes)
      }
      return tripped ? trip(now, ticket) : Effect.void
    })
  }

  const refusal = (now: number): CircuitOpen => {
    const retryAfter = state === "Isolated"
      ? Duration.infinity
      : state === "Open"
      ? durationUntil(now, openUntil)
      : Duration.millis(lastOpenMillis)
    return new CircuitOpen({ breaker: name, retryAfter })
  }

  // Closed: no resource is taken, so nothing needs masking; an interrupted call skips its
  // verdict, which is what interruption should do. Half-open: the probe slot is taken and its
  // release installed in one uninterruptible step, so an interrupted probe always frees it.
  const execute = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | CircuitOpen, R> =>
    Effect.clockWith((clock) => state === "Closed" ? closedCall(self, clock) : admit(self, Effect.fail))

  /**
   * Admit `self` as a probe, or hand the refusal to `refused`, whose effect runs with the
   * caller's own interruptibility (not the mask's).
   */
  const admit = <A, E, R, E2, R2>(
    self: Effect.Effect<A, E, R>,
    refused: (error: CircuitOpen) => Effect.Effect<A, E2, R2>
  ): Effect.Effect<A, E | E2, R | R2> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.clockWith((clock) =>
        Effect.suspend((): Effect.Effect<A, E | E2, R | R2> => {
          const now = clock.unsafeCurrentTimeMillis()
          refresh(now)
          if (state !== "HalfOpen" || pending || probesInFlight >= probes) return restore(refused(refusal(now)))
          probesInFlight++
          if (link === undefined) return guarded(restore(self), probeVerdict, epoch)
          // Linked: the probe also needs a slot shared by every process.
          const ticket = epoch
          return Effect.flatMap(link.probe, (release): Effect.Effect<A, E | E2, R | R2> => {
            if (release !== undefined) return Effect.ensuring(guarded(restore(self), probeVerdict, ticket), release)
            if (ticket === epoch) probesInFlight--
            return restore(refused(refusal(now)))
          })
        })
      )
    )

  /**
   * Completes at the first change (a transition, or a half-open probe slot freeing) after
   * `seen` changes — at once if one has happened since.
   */
  const changedSince = (seen: number): Effect.Effect<void> =>
    Effect.async<void>((resume) => {
      if (changes !== seen) return resume(Effect.void)
      const waiter = () => resume(Effect.void)
      ;(waiters ??= new Set()).add(waiter)
      return Effect.sync(() => {
        waiters?.delete(waiter)
      })
    })

  /** While open, until its time is up (or it changes earlier, by `reset`); otherwise, until it changes. */
  const waitFor = (): Effect.Effect<void> => {
    const changed = changedSince(changes)
    return state === "Open"
      ? Effect.raceFirst(sleepUntil(openUntil), changed)
      : state === "HalfOpen" && link !== undefined
      ? Effect.raceFirst(Effect.sleep(Duration.millis(link.pollMillis)), changed)
      : changed
  }

  const follow = (to: State, millis: number): Effect.Effect<void> =>
    withNow((now) => {
      refresh(now)
      if (to === "Open") {
        const until = now + millis
        if (state === "Open" && openUntil >= until) return
        openUntil = until
        lastOpenMillis = millis
      } else if (to === state) return
      following = true
      try {
        transition(to, now)
      } finally {
        following = false
      }
      if (to === "Closed") {
        closedAt = now
        clearCounts()
      }
    })

  const executeWaiting = <A, E, R, E2 = never>(
    self: Effect.Effect<A, E, R>,
    around: WaitHook<E2> = identity
  ): Effect.Effect<A, E | E2, R> => {
    const loop: Effect.Effect<A, E | E2, R> = Effect.clockWith((clock) =>
      state === "Closed"
        ? closedCall(self, clock)
        : admit(self, (error) => Effect.zipRight(around(waitFor(), error), loop))
    )
    return loop
  }

  const withNow = <A>(f: (now: number) => A): Effect.Effect<A> =>
    Effect.clockWith((clock) => Effect.sync(() => f(clock.unsafeCurrentTimeMillis())))

  return {
    follow,
    execute,
    executeWaiting,
    state: withNow((now) => {
      refresh(now)
      return state
    }),
    transitions: Stream.unwrapScoped(subscribe),
    subscribe,
    isolate: withNow((now) => {
      refresh(now)
      if (state !== "Isolated") transition("Isolated", now)
    }),
    reset: withNow((now) => {
      refresh(now)
      streak = 0
      scheduleState = openSchedule?.initial
      lastOpenMillis = 0
      clearCounts()
      if (state !== "Closed") {
        transition("Closed", now)
        closedAt = now
      }
    })
  }
}
