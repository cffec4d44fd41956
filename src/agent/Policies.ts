/**
 * The policies one `AgentService` holds for all its tasks: the concurrency limit (a `Bulkhead`,
 * or an `AdaptiveLimit`), a circuit breaker and a token budget per model, the retry policies
 * with their shared retry budget, a hedge per model with its budget, and the one timer every
 * attempt's time limit runs on. Built once from the service's options; each task's pipeline
 * (`Tier`, `AnswerStream`) takes what it needs from here per call.
 *
 * Why a module of its own: this is the state that outlives a task and that several processes
 * may come to share. A breaker or a token budget is made here from the context the service is
 * built in (so a store layer the app provides, such as a shared one, reaches every model's
 * breaker and budget without AgentService knowing), and whoever runs a task's pipeline from
 * outside (a durable runner, a gateway) builds the same policies with the same options.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Option, Scope } from "effect"
import * as AdaptiveLimit from "../concurrency/AdaptiveLimit.js"
import * as Bulkhead from "../concurrency/Bulkhead.js"
import * as AgentEvent from "../events/AgentEvent.js"
import type * as EventBus from "../events/EventBus.js"
import * as Budget from "../policy/Budget.js"
import * as CircuitBreaker from "../policy/CircuitBreaker.js"
import * as Hedge from "../policy/Hedge.js"
import * as Retry from "../policy/Retry.js"
import * as Timeout from "../policy/Timeout.js"
import type * as TokenBudget from "../policy/TokenBudget.js"
import * as SharedStore from "../store/SharedStore.js"
import { metrics } from "./AgentMetrics.js"
import type { AgentError, FlowState, Options } from "./AgentService.js"
import * as Throttling from "./Throttling.js"

/**
 * The policies of one service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Policies {
  /** Tasks `processAll` holds at once (`Options.maxTasks`, at least the concurrency). */
  readonly maxTasks: number
  /** How many tasks `processAll` keeps awake: a number, or read at each admission (adaptive). */
  readonly awake: number | (() => number)
  /** Runs a call holding a concurrency permit (the adaptive limit's, under `"adaptive"`). */
  readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /**
   * A plain permit held until the scope closes, for a stream's attempt (under an adaptive
   * limit, up to its `max`: a stream's open time is no latency to learn from).
   */
  readonly takePermit: Effect.Effect<void, never, Scope.Scope>
  /** The breaker of a model, by name; undefined with `breaker: false`. */
  readonly breakerFor: (model: string) => Effect.Effect<CircuitBreaker.CircuitBreaker | undefined>
  /** The token budget of a model, by name (tiers on one provider share it); undefined with `tokenBudget: false`. */
  readonly budgetFor: (model: string) => Effect.Effect<TokenBudget.TokenBudget<SharedStore.StoreUnavailable> | undefined>
  /**
   * The retry policy of a tier: the last tier's waits on its open circuit; an earlier tier's
   * does not retry an open circuit (the next tier answers). Undefined with `retry: false`.
   */
  readonly retryFor: (last: boolean) => Retry.Policy<AgentError> | undefined
  /** A hedge for a model (its learned delay follows that model); undefined unless hedging is on. */
  readonly hedgeFor: () => Effect.Effect<Hedge.Hedge | undefined>
  /** The one timer every attempt's time limit runs on. */
  readonly timer: Timeout.Timer
  /** Whether each model is throttling the batch (its attempts and 429s): a Retry-After wait keeps a task's place only then. */
  readonly throttling: Throttling.Throttling
  /** The per-attempt timeout, and it in milliseconds. */
  readonly timeout: Duration.Duration
  readonly timeoutMillis: number
  /** The concurrency limit and each model's token budget as they are now. */
  readonly flow: Effect.Effect<FlowState>
}

/**
 * `concurrency: 8`; `maxTasks: 1000`; `timeout: 30 s` per attempt; a token budget per model
 * that learns the provider's limits (see `AgentService.defaults`, which these are part of).
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  concurrency: 8,
  maxTasks: 1000,
  timeout: Duration.seconds(30),
  tokenBudget: { probe: false, holdUnknown: false }
} as const

/**
 * Build the policies from the service's options. Breaker transitions are published on `bus`
 * as they happen, in order with the calls that caused them. Budgets and breakers come from the
 * `SharedStore` in context (in memory without one); its changes between shared and local are
 * `StoreStatus` events and count in `wiz_store_fallbacks_total`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options, bus: EventBus.EventBus.Service): Effect.Effect<Policies, never, Scope.Scope> =>
  Effect.gen(function*() {
    const adaptive = options.concurrency === "adaptive" ? yield* AdaptiveLimit.make(options.adaptive) : undefined
    const fixed = typeof options.concurrency === "number" ? options.concurrency : defaults.concurrency
    const maxTasks = Math.max(options.maxTasks ?? defaults.maxTasks, adaptive === undefined ? fixed : 1)
    // Under an adaptive limit, permits up to its max (streams take plain ones), and twice the
    // limit in force awake: enough queued at the limiter to fill each freed permit at once,
    // and few enough that calls admitted before the provider's first report (which the token
    // budget has nothing to charge against yet) cannot pile up behind the limiter.
    const bulkhead = yield* Bulkhead.make({
      permits: adaptive === undefined ? fixed : Math.min(maxTasks, options.adaptive?.max ?? AdaptiveLimit.defaults.max)
    })
    const timeout = Duration.decode(options.timeout ?? defaults.timeout)
    const store = Option.getOrElse(yield* Effect.serviceOption(SharedStore.SharedStore), () => SharedStore.memory)
    const scope = yield* Effect.scope
    const hooks: SharedStore.Hooks = {
      onStatus: ({ mode, reason, store }) => {
        if (mode === "local") metrics.storeFallbacks.unsafeUpdate(1, [])
        if (bus.wants("StoreStatus")) {
          bus.unsafePublish(new AgentEvent.StoreStatus({ store, mode, ...(reason === undefined ? {} : { reason }) }, true))
        }
      }
    }

    const breakers = options.breaker === false ? undefined : yield* store.breakers({
      ...options.breaker,
      onTransition: (breaker, { at, from, to, until }) => {
        metrics.breakerTransitions.unsafeUpdate(1, [])
        if (bus.wants("BreakerTransition")) {
          bus.unsafePublish(
            new AgentEvent.BreakerTransition({
              breaker,
              from,
              to,
              atMillis: at,
              ...(until === undefined ? {} : { untilMillis: until })
            }, true)
          )
        }
      }
    }, hooks)

    const budgetOptions = options.tokenBudget === false ? undefined : options.tokenBudget ?? defaults.tokenBudget
    const budgets = new Map<string, TokenBudget.TokenBudget<SharedStore.StoreUnavailable>>()
    const budgetFor = (name: string): Effect.Effect<TokenBudget.TokenBudget<SharedStore.StoreUnavailable> | undefined> => {
      if (budgetOptions === undefined) return Effect.succeed(undefined)
      const known = budgets.get(name)
      if (known !== undefined) return Effect.succeed(known)
      return Effect.tap(Scope.extend(store.budget(name, budgetOptions, hooks), scope), (made) => {
        budgets.set(name, made)
      })
    }

    const limitState = adaptive === undefined
      ? Effect.map(bulkhead.stats, ({ active, permits, queued }) => ({ limit: permits, active, queued }))
      : Effect.map(adaptive.stats, ({ active, limit, queued }) => ({ limit, active, queued }))

    return {
      maxTasks,
      awake: adaptive === undefined ? fixed : () => Math.min(maxTasks, 2 * adaptive.unsafeLimit()),
      withPermit: adaptive === undefined ? bulkhead.withPermit : adaptive.withPermit,
      takePermit: bulkhead.takePermits(1),
      breakerFor: (name) => breakers === undefined ? Effect.succeed(undefined) : breakers.get(name),
      budgetFor,
      retryFor: yield* retries(options),
      hedgeFor: yield* hedges(options),
      timer: Timeout.timer(),
      throttling: Throttling.make(),
      timeout,
      timeoutMillis: Duration.toMillis(timeout),
      flow: Effect.zipWith(
        limitState,
        Effect.forEach(budgets, ([name, budget]) => Effect.map(budget.state, (state) => [name, state] as const)),
        (limits, states): FlowState => ({ ...limits, budgets: Object.fromEntries(states) })
      )
    }
  })

/** The retry policies of the last tier and of an earlier one, with their shared budget. */
const retries = (options: Options): Effect.Effect<(last: boolean) => Retry.Policy<AgentError> | undefined> =>
  Effect.gen(function*() {
    if (options.retry === false) return () => undefined
    const retryBudget = options.retryBudget === false ? undefined : yield* Budget.make(options.retryBudget ?? {})
    const retryOptions = { ...options.retry, ...(retryBudget === undefined ? {} : { budget: retryBudget }) }
    const isRetryable = retryOptions.isRetryable ?? Retry.defaults.isRetryable
    const lastTier = Retry.make<AgentError>(retryOptions)
    const earlyTier = Retry.make<AgentError>({
      ...retryOptions,
      isRetryable: (error) => error._tag !== "CircuitOpen" && isRetryable(error)
    })
    return (last) => last ? lastTier : earlyTier
  })

/**
 * A hedge per model, all drawing on one budget of their own: sharing the retry budget would
 * count each call's first attempt twice (once per policy) and let hedges spend what retries
 * need.
 */
const hedges = (options: Options): Effect.Effect<() => Effect.Effect<Hedge.Hedge | undefined>> =>
  Effect.gen(function*() {
    if (options.hedge === undefined || options.hedge === false) return () => Effect.succeed(undefined)
    const { budget, ...hedgeOptions } = options.hedge
    const hedgeBudget = budget === false ? undefined : yield* Budget.make(budget ?? {})
    return () => Hedge.make({ ...hedgeOptions, ...(hedgeBudget === undefined ? {} : { budget: hedgeBudget }) })
  })
