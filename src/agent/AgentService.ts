/**
 * The agent task processor: the seed's `AgentTaskProcessor`, rebuilt so each policy sits where
 * it does no harm. Per attempt: `breaker → permit → timeout → model`; around the attempt,
 * optional hedging; around that, the one retry policy (so retries cannot stack); around that,
 * the optional fallback chain. A concurrency permit is held only while a request is on the
 * wire, never through a backoff sleep (the seed held it through every sleep), and an open
 * breaker fails an attempt at once with a `retryAfter` the retry policy may wait out or hand to
 * the fallback tier.
 *
 * Every step publishes a typed {@link AgentEvent} on `events` and updates a `Metric`.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { AgentService, AgentTask, EmbeddedModel } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const agent = yield* AgentService.AgentService
 *   const tasks = [new AgentTask.AgentTask({ id: "t1", prompt: "Summarise: Effect is a TypeScript library." })]
 *   return yield* Stream.runCollect(agent.processAll(tasks))
 * }).pipe(
 *   Effect.provide(AgentService.layer({ concurrency: 8, retry: { maxAttempts: 4 } })),
 *   Effect.provide(EmbeddedModel.layer({ seed: 1 }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Clock, Config, Context, Duration, Effect, Either, Equal, Exit, FiberRef, Hash, Layer, Metric, MetricBoundaries, MetricKey, Option, Stream, Tracer } from "effect"
import type { Array as Arr, ConfigError, Scope } from "effect"
import * as AdaptiveLimit from "../concurrency/AdaptiveLimit.js"
import * as Bulkhead from "../concurrency/Bulkhead.js"
import * as AgentEvent from "../events/AgentEvent.js"
import * as EventBus from "../events/EventBus.js"
import * as AiModel from "../model/AiModel.js"
import * as Budget from "../policy/Budget.js"
import * as CircuitBreaker from "../policy/CircuitBreaker.js"
import * as Fallback from "../policy/Fallback.js"
import * as Hedge from "../policy/Hedge.js"
import * as Retry from "../policy/Retry.js"
import * as Timeout from "../policy/Timeout.js"
import * as TokenBudget from "../policy/TokenBudget.js"
import * as StreamingAnswer from "../stream/StreamingAnswer.js"
import * as Coalesce from "../concurrency/Coalesce.js"
import * as Memo from "../concurrency/Memo.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import { type AgentTask, type Coalesced, TaskFailed, type TaskResult, TaskSucceeded } from "./AgentTask.js"
import { TaskWindow } from "../internal/taskWindow.js"
import { unsafeConstruct } from "../internal/unsafeConstruct.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Model calls on the wire at once (the permit), and how many tasks `processAll` keeps awake
   * at once: a task asleep in a backoff or waiting on an open circuit holds no permit and no
   * place, so new tasks start meanwhile. `"adaptive"`: an {@link AdaptiveLimit} finds the
   * provider's knee by itself (tuned by `adaptive`), and `processAll` keeps twice the limit in
   * force awake.
   */
  readonly concurrency?: number | "adaptive"
  /** The adaptive limit's options, with `concurrency: "adaptive"`. */
  readonly adaptive?: AdaptiveLimit.Options
  /**
   * A token budget per model: each attempt reserves its prompt tokens + `maxTokens` (and one
   * request) before it takes a permit, waiting its turn in FIFO order, and settles with the
   * real usage after; a 429 returns the reservation and holds the budget until its
   * `retryAfter`. Give your limits (`{ limits: { requests: 500, tokens: 90_000 } }`, per
   * minute); by default (`{ probe: false, holdUnknown: false }`) it learns them from the
   * provider's rate-limit reports, limiting nothing until the first report (`{}` instead sends
   * one call at a time until then, which also holds back hedges, and lets a 429 without a
   * report hold every call). `false` turns it off.
   */
  readonly tokenBudget?: TokenBudget.Options | false
  /**
   * Tasks `processAll` holds at once — awake, asleep, or waiting for a place — which bounds its
   * memory (each costs a fiber and its state). At least `concurrency`.
   */
  readonly maxTasks?: number
  /** `maxTokens` for a task that does not set its own. */
  readonly maxTokens?: number
  /**
   * Per-attempt timeout: the attempt is interrupted and fails with `ModelTimeout`. It costs a
   * fiber per attempt (~10 µs, bench/overhead.ts); `Duration.infinity` turns it off.
   */
  readonly timeout?: Duration.DurationInput
  /**
   * Per-task deadline: how long one task may take in all — calls, backoffs, Retry-After waits,
   * open circuits, fallback tiers. When it passes, the task fails with `Retry.DeadlineExceeded`
   * saying what it was waiting for and the last error it met; no retry starts that could not
   * finish before it. `Duration.infinity` turns it off.
   */
  readonly deadline?: Duration.DurationInput
  /** The one retry policy; `false` makes one attempt per tier. */
  readonly retry?: Omit<Retry.Options<AgentError>, "budget" | "attemptTimeout" | "deadline"> | false
  /** The retry budget shared by every task; `false` for none. */
  readonly retryBudget?: Budget.Options | false
  /**
   * One circuit breaker per model name; `false` for none. A task whose last model tier meets an
   * open circuit waits for it (within its deadline) without spending an attempt; an earlier
   * tier's open circuit hands the task to the next tier at once.
   */
  readonly breaker?: Omit<CircuitBreaker.KeyedOptions, "name" | "onTransition"> | false
  /**
   * Hedged attempts, with a hedge (and a learned delay) per model; off unless given. Hedges
   * draw on a budget of their own (`budget`, default `Budget.defaults`; `false` for none).
   */
  readonly hedge?: Omit<Hedge.Options, "onHedge" | "budget"> & { readonly budget?: Budget.Options | false } | false
  /**
   * Tiers after the primary model: other models (build them from layers with
   * `Fallback.models`), then an optional static answer. Which errors fall through is
   * `fallThrough` (default: all but `InvalidRequest`).
   */
  readonly fallback?: {
    readonly models?: ReadonlyArray<AiModel.AiModel.Service>
    readonly staticAnswer?: (task: AgentTask) => string
    readonly fallThrough?: (error: AgentError) => boolean
    /**
     * A `Retry-After` longer than the retry policy's `retryAfterMax` is never slept through:
     * `"fallback"` (default) hands the task to the next tier at once, `"fail"` fails it.
     */
    readonly retryAfterAboveMax?: "fallback" | "fail"
  }
  /**
   * Identical tasks in flight share one answer (the seed's `RequestCoalescer`): one model call,
   * every task its own record, which says it `led` or `joined` the call and how many tasks the
   * call served. `true`, or `{ key }` to say what "identical" means (by default the request's
   * prompt, `maxTokens`, `system` and `temperature`). Off unless given.
   */
  readonly coalesce?: boolean | { readonly key?: (request: AiModel.CompletionRequest) => string }
  /**
   * Keep answers for repeated requests (the seed's `LazyAIProcessor`, on `Memo`): a request
   * answered within `timeToLive` is answered again without a call (its record says `memoized`);
   * failures are never kept. Off unless given.
   */
  readonly memo?: {
    readonly timeToLive?: Duration.DurationInput
    readonly capacity?: number
    readonly key?: (request: AiModel.CompletionRequest) => string
  }
  /**
   * `stream(task)`: time to the first chunk (default: `timeout`), longest gap between chunks
   * (default `StreamingAnswer.defaults.betweenChunks`), and `continue`: after a mid-stream
   * failure, ask the next attempt to continue from the text delivered (off by default).
   */
  readonly stream?: {
    readonly firstChunk?: Duration.DurationInput
    readonly betweenChunks?: Duration.DurationInput
    readonly continue?: boolean | { readonly maxContinuations?: number }
  }
}

/**
 * The key of a request for coalescing and memoization: its prompt and the parameters that
 * change the answer.
 *
 * @since 0.1.0
 * @category coalescing
 */
export const requestKey = (request: AiModel.CompletionRequest): string =>
  JSON.stringify([request.prompt, request.maxTokens, request.system ?? null, request.temperature ?? null])

/**
 * `concurrency: 8`; `maxTasks: 1000` (a few MB of waiting tasks at most, and enough that a
 * whole batch of a few hundred tasks can wait out an outage side by side, so it ends in one
 * deadline rather than one per window); `maxTokens: 256`; `timeout: 30 s` per attempt;
 * `deadline: 2 minutes` per task (four attempts of a provider that answers within the timeout
 * fit with their backoffs; a provider that is down ends every task within it, with a typed
 * error, instead of a run that crawls); retries per `Retry.defaults`; a retry budget per
 * `Budget.defaults` (Linkerd's 20% + 10/s); a breaker per model per `CircuitBreaker.defaults`
 * (50% of the last 100 calls, 5 s open; a 429 is flow control, not a failure); a token budget
 * per model that learns the provider's limits from its rate-limit reports (`tokenBudget: {
 * probe: false, holdUnknown: false }`: nothing is limited, and nothing waits, until a report
 * says what the limits are; a 429 without one holds only its own task); no hedging, no
 * fallback.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  concurrency: 8,
  maxTasks: 1000,
  maxTokens: 256,
  timeout: Duration.seconds(30),
  deadline: Duration.minutes(2),
  tokenBudget: { probe: false, holdUnknown: false }
} as const

/**
 * What can end one tier's work on a task.
 *
 * @since 0.1.0
 * @category errors
 */
export type AgentError = AiModel.ModelError | CircuitBreaker.CircuitOpen | Retry.DeadlineExceeded | TokenBudget.BudgetExceeded

/**
 * The flow control right now: the concurrency limit in force and what waits on it, and each
 * model's token budget when there is one.
 *
 * @since 0.1.0
 * @category models
 */
export interface FlowState {
  /** The concurrency limit in force (the adaptive limit's current value, or `concurrency`). */
  readonly limit: number
  /** Calls holding a permit. */
  readonly active: number
  /** Calls waiting for a permit. */
  readonly queued: number
  /** Each model's token budget, by model name. */
  readonly budgets: { readonly [model: string]: TokenBudget.State }
}

/**
 * What can end a streamed answer: an error before its first chunk (after retries and
 * fallback), or a break after it (an error, an idle timeout, a missing end) nobody continued.
 *
 * @since 0.1.0
 * @category errors
 */
export type StreamError = AgentError | Fallback.AllTiersFailed<AgentError> | StreamingAnswer.MidStreamError<AiModel.ModelError>

/**
 * Counters and latencies of the agent, as Effect `Metric`s.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  tasks: Metric.counter("wiz_tasks_total", { description: "tasks finished", incremental: true }),
  attempts: Metric.counter("wiz_attempts_total", { description: "model calls started", incremental: true }),
  retries: Metric.counter("wiz_retries_total", { description: "retries scheduled", incremental: true }),
  breakerTransitions: Metric.counter("wiz_breaker_transitions_total", {
    description: "circuit breaker state changes",
    incremental: true
  }),
  fallbacks: Metric.counter("wiz_fallbacks_total", { description: "answers from a fallback tier", incremental: true }),
  hedges: Metric.counter("wiz_hedges_total", { description: "hedged attempts started", incremental: true }),
  taskDuration: Metric.histogram(
    "wiz_task_duration_ms",
    MetricBoundaries.exponential({ start: 10, factor: 2, count: 14 }),
    "task duration in milliseconds"
  )
} as const

/**
 * The agent task processor.
 *
 * @since 0.1.0
 * @category tags
 */
export class AgentService extends Context.Tag("wiz-effect/AgentService")<AgentService, AgentService.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace AgentService {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /** Answer one task, or fail with the error that ended it and the attempts made. */
    readonly process: (task: AgentTask) => Effect.Effect<TaskSucceeded, TaskFailed>
    /** Answer many tasks, `concurrency` at a time, emitting each result as it finishes. */
    readonly processAll: {
      (tasks: Iterable<AgentTask>): Stream.Stream<TaskResult>
      <E, R>(tasks: Stream.Stream<AgentTask, E, R>): Stream.Stream<TaskResult, E, R>
    }
    /**
     * Answer one task as the model produces it, through the same policies: retried, or handed to
     * the next tier, only before its first chunk (or continued after a break, with `continue`);
     * a stream that ends without its final chunk fails with `IncompleteStream` and its text.
     * A permit is held while an attempt's stream is open (under `concurrency: "adaptive"`, a
     * plain one up to the limit's `max`: a stream's open time is no latency to learn from); the
     * reader's pace paces the model. The token budget is charged as for `process`, and settled
     * with the usage of the final chunk.
     */
    readonly stream: (task: AgentTask) => Stream.Stream<AiModel.CompletionChunk, StreamError>
    /**
     * Everything the policies do from when the stream runs; it misses nothing from then on (its
     * buffer, when full, makes the agent wait rather than drop an event).
     */
    readonly events: Stream.Stream<AgentEvent.AgentEvent>
    /**
     * Subscribe now, in a scope, so no event after this point is missed: a bounded buffer that,
     * when full, makes the agent wait for the reader (read it, or close its scope). For a
     * subscriber that may drop instead, use `bus.subscribe({ strategy: "sliding" })`.
     */
    readonly subscribe: Effect.Effect<Stream.Stream<AgentEvent.AgentEvent>, never, Scope.Scope>
    /** The bus the agent publishes on: the `EventBus` in context when there is one, else its own. */
    readonly bus: EventBus.EventBus.Service
    /** The concurrency limit and the token budgets as they are now. */
    readonly flow: Effect.Effect<FlowState>
  }
}

/** Effect's default tracer, which records no span: under it AgentService makes none. */
const nativeTracer = Effect.runSync(Effect.tracer)

/**
 * `metrics.tasks` tagged by status, as metrics of their own key: `Metric.tagged` would merge
 * the tags into a new array on every update, missing its hook cache (a registry lookup and a
 * key hash per task). `Metric.value(Metric.tagged(metrics.tasks, "status", s))` reads the same.
 */
const tasksWithStatus = (status: "succeeded" | "failed") =>
  Metric.fromMetricKey(
    MetricKey.counter("wiz_tasks_total", { description: "tasks finished", incremental: true }).pipe(
      MetricKey.tagged("status", status)
    )
  )
const succeededCount = tasksWithStatus("succeeded")
const failedCount = tasksWithStatus("failed")

/** What every task of one service shares: its bus, the options its hooks need. */
interface Shared {
  readonly bus: EventBus.EventBus.Service
  readonly deadline: Duration.Duration
}

/**
 * One task while it runs: the calls it made and the last error it met (for its record and its
 * deadline's error), the window it sleeps in (none outside `processAll`), and the retry
 * policy's per-call hooks as its methods. It travels with the work as an argument, so no
 * fiber-local state is copied per task and no closure is built for a hook that never runs.
 */
class TaskRun implements Retry.CallOptions<AgentError> {
  /** Calls that reached a model. */
  attempts = 0
  /** Time spent waiting for a token budget, in milliseconds. */
  budgetWaitMs = 0
  lastError: AgentError | undefined = undefined
  /** Whether the task has a span of its own (a tracer records spans): its story goes on it as events. */
  traced = false
  constructor(
    readonly task: AgentTask,
    readonly window: TaskWindow | undefined,
    readonly shared: Shared,
    /** Clock time (ms) of the task's deadline. */
    readonly deadlineAt: number
  ) {}

  onRetry({ attempt, delay, error }: Retry.RetryEvent<AgentError>): Effect.Effect<void> {
    this.lastError = error
    const told = Effect.zipRight(
      Metric.increment(metrics.retries),
      emit(this.shared.bus, "RetryScheduled", () =>
        new AgentEvent.RetryScheduled({
          taskId: this.task.id,
          model: modelOf(error),
          attempt,
          delayMillis: Duration.toMillis(delay),
          error: ErrorInfo.fromError(error)
        }, true))
    )
    return this.traced
      ? Effect.zipRight(spanEvent("retry", { attempt, "delay.ms": Duration.toMillis(delay), "error.tag": error._tag }), told)
      : told
  }

  onGiveUp({ attempts, error, reason }: Retry.GiveUpEvent<AgentError>): Effect.Effect<void> {
    if (error._tag !== "DeadlineExceeded") this.lastError = error
    return emit(this.shared.bus, "RetryGivenUp", () =>
      new AgentEvent.RetryGivenUp({
        taskId: this.task.id,
        model: modelOf(error),
        reason,
        attempts,
        error: ErrorInfo.fromError(error)
      }, true))
  }

  /**
   * Waiting out a 429's Retry-After keeps the task's place: the provider asked the batch to
   * slow down, so no new task starts meanwhile. Any other backoff frees the place.
   */
  wait(delay: Duration.Duration, error: AgentError): Effect.Effect<void> {
    return this.window === undefined || error._tag === "RateLimited"
      ? Effect.sleep(delay)
      : this.window.asleep(Effect.sleep(delay))
  }

  /** The hook a metered attempt calls when it waited for its budget. */
  budgetWaited(model: string): (waitedMillis: number, cost: TokenBudget.Cost) => Effect.Effect<void> {
    return (waitedMillis, cost) => {
      this.budgetWaitMs += waitedMillis
      return emit(this.shared.bus, "BudgetWaited", () =>
        new AgentEvent.BudgetWaited({
          taskId: this.task.id,
          model,
          budget: "tokens",
          amount: cost.tokens ?? 0,
          waitMillis: waitedMillis
        }, true))
    }
  }

  deadlineExceeded(waitingFor: string): Retry.DeadlineExceeded {
    return new Retry.DeadlineExceeded({
      deadline: this.shared.deadline,
      attempts: this.attempts,
      waitingFor,
      ...(this.lastError === undefined ? {} : { lastError: ErrorInfo.fromError(this.lastError) })
    }, true)
  }

  /** Wait on an open circuit asleep (it holds no place), but never past the deadline. */
  waitOnCircuit(wait: Effect.Effect<void>, refused: CircuitBreaker.CircuitOpen): Effect.Effect<void, Retry.DeadlineExceeded> {
    const waiting = Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const left = this.deadlineAt - now
      const expired = Effect.failSync(() => this.deadlineExceeded(`the circuit of ${refused.message}`))
      if (left <= 0) return expired
      const bounded = Number.isFinite(left)
        ? Effect.raceFirst(wait, Effect.zipRight(Effect.sleep(Duration.millis(left)), expired))
        : wait
      return this.window === undefined ? bounded : this.window.asleep(bounded)
    })
    return this.traced
      ? Effect.zipRight(
        spanEvent("circuit.wait", { breaker: refused.breaker, "retry_after.ms": Duration.toMillis(refused.retryAfter) }),
        waiting
      )
      : waiting
  }
}

/** An event on the current span (the task's own: called only when it has one). */
const spanEvent = (name: string, attributes: Record<string, unknown>): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    const span = fiber.currentSpan
    if (span?._tag === "Span") {
      const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeNanos()
      span.event(name, now, attributes)
    }
    return Effect.void
  })

/** Publish the event `make` builds, if anyone wants its tag: nobody listening costs a lookup. */
const emit = <T extends AgentEvent.Tag>(
  bus: EventBus.EventBus.Service,
  tag: T,
  make: () => AgentEvent.AgentEvent
): Effect.Effect<void> => bus.wants(tag) ? bus.publish(make()) : Effect.void

/**
 * Build the service from its options and the `AiModel` in context. It publishes on the
 * `EventBus` in context when there is one, else on a bus of its own, ended with the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<AgentService.Service, never, AiModel.AiModel | Scope.Scope> =>
  Effect.gen(function*() {
    const primary = yield* AiModel.AiModel
    const adaptive = options.concurrency === "adaptive"
      ? yield* AdaptiveLimit.make(options.adaptive)
      : undefined
    const fixed = typeof options.concurrency === "number" ? options.concurrency : defaults.concurrency
    const maxTasks = Math.max(options.maxTasks ?? defaults.maxTasks, adaptive === undefined ? fixed : 1)
    // Under an adaptive limit, permits up to its max (streams take plain ones), and twice the
    // limit in force awake: enough queued at the limiter to fill each freed permit at once,
    // and few enough that calls admitted before the provider's first report (which the token
    // budget has nothing to charge against yet) cannot pile up behind the limiter.
    const concurrency = adaptive === undefined
      ? fixed
      : Math.min(maxTasks, options.adaptive?.max ?? AdaptiveLimit.defaults.max)
    const awake: number | (() => number) = adaptive === undefined
      ? fixed
      : () => Math.min(maxTasks, 2 * adaptive.unsafeLimit())
    const maxTokens = options.maxTokens ?? defaults.maxTokens
    const timeout = Duration.decode(options.timeout ?? defaults.timeout)
    const timeoutMillis = Duration.toMillis(timeout)
    const deadline = Duration.decode(options.deadline ?? defaults.deadline)
    const deadlineMillis = Duration.toMillis(deadline)
    const bus = yield* Option.match(yield* Effect.serviceOption(EventBus.EventBus), {
      onNone: () => EventBus.make(),
      onSome: Effect.succeed
    })
    const shared: Shared = { bus, deadline }

    const bulkhead = yield* Bulkhead.make({ permits: concurrency })
    const withPermit = adaptive === undefined ? bulkhead.withPermit : adaptive.withPermit
    const budgetOptions = options.tokenBudget === false ? undefined : options.tokenBudget ?? defaults.tokenBudget
    const budgets = new Map<string, TokenBudget.TokenBudget>()
    // One timer for every attempt's time limit: the timeout, or what is left of the deadline.
    const timer = Timeout.timer()

    // Transitions are published as they happen, in order with the calls that caused them.
    const breakers = options.breaker === false ? undefined : yield* CircuitBreaker.makeKeyed({
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
    })

    const retryBudget = options.retryBudget === false ? undefined : yield* Budget.make(options.retryBudget ?? {})
    const retryOptions = options.retry === false ? undefined : {
      ...options.retry,
      ...(retryBudget === undefined ? {} : { budget: retryBudget })
    }
    const isRetryable = retryOptions?.isRetryable ?? Retry.defaults.isRetryable
    /** The retry of the last model tier, which waits on its open circuit instead of failing. */
    const lastTierRetry = retryOptions === undefined ? undefined : Retry.make<AgentError>(retryOptions)
    /** The retry of an earlier tier: its open circuit is no reason to retry, the next tier answers. */
    const earlyTierRetry = retryOptions === undefined ? undefined : Retry.make<AgentError>({
      ...retryOptions,
      isRetryable: (error) => error._tag !== "CircuitOpen" && isRetryable(error)
    })

    const hedgeConfig = options.hedge === undefined || options.hedge === false ? undefined : options.hedge
    // Hedges have a budget of their own: sharing the retry budget would count each call's
    // first attempt twice (once per policy) and let hedges spend what retries need.
    const hedgeBudget = hedgeConfig === undefined || hedgeConfig.budget === false
      ? undefined
      : yield* Budget.make(hedgeConfig.budget ?? {})

    /** A model's own hedge, so a learned delay follows that model's latencies. */
    const hedgeFor = (): Effect.Effect<Hedge.Hedge | undefined> => {
      if (hedgeConfig === undefined) return Effect.succeed(undefined)
      const { budget: _, ...hedgeOptions } = hedgeConfig
      return Hedge.make({ ...hedgeOptions, ...(hedgeBudget === undefined ? {} : { budget: hedgeBudget }) })
    }

    /** The model's token budget: one per model name, so tiers on one provider share it. */
    const budgetFor = (name: string): Effect.Effect<TokenBudget.TokenBudget> => {
      const known = budgets.get(name)
      if (known !== undefined) return Effect.succeed(known)
      return Effect.tap(TokenBudget.make(budgetOptions), (made) => {
        budgets.set(name, made)
      })
    }

    /**
     * One tier: per attempt breaker → token budget → permit → time limit → model, hedged,
     * retried. The last
     * tier waits on its open circuit (asleep, within the deadline); an earlier one fails at
     * once with `CircuitOpen`, so the next tier answers.
     */
    const tier = Effect.fnUntraced(function*(model: AiModel.AiModel.Service, last: boolean) {
      const hedge = yield* hedgeFor()
      const modelTimeout = () => new AiModel.ModelTimeout({ model: model.name, timeout }, true)
      const retryPolicy = last ? lastTierRetry : earlyTierRetry
      const breaker = breakers === undefined ? undefined : yield* breakers.get(model.name)
      const budget = budgetOptions === undefined ? undefined : yield* budgetFor(model.name)
      // The retry policy's hooks see every failed attempt; without one, the call notes its own.
      const remember = retryPolicy !== undefined
        ? undefined
        : (run: TaskRun) => (error: AiModel.ModelError | Retry.DeadlineExceeded) => {
          run.lastError = error
          return Effect.fail(error)
        }

      return (request: AiModel.CompletionRequest, run: TaskRun): Effect.Effect<AiModel.Completion, AgentError> => {
        // The call's time limit is its timeout, or what is left of the task's deadline if less.
        const call = Effect.withFiberRuntime<AiModel.Completion, AiModel.ModelError | Retry.DeadlineExceeded>((fiber) => {
          const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
          run.attempts++
          metrics.attempts.unsafeUpdate(1, fiber.getFiberRef(FiberRef.currentMetricLabels))
          if (run.traced) {
            const span = fiber.currentSpan
            if (span?._tag === "Span") span.event("attempt", BigInt(Math.round(now * 1_000_000)), { model: model.name, attempt: run.attempts })
          }
          const left = run.deadlineAt - now
          const limited = left < timeoutMillis
            ? timer.within(model.generate(request), Duration.millis(Math.max(0, left)), () =>
              run.deadlineExceeded(`an answer from ${model.name}`))
            : timer.within(model.generate(request), timeout, modelTimeout)
          return remember === undefined ? limited : Effect.catchAll(limited, remember(run))
        })
        const permitted = budget === undefined
          ? withPermit(call)
          : budget.meter(request, run.budgetWaited(model.name))(withPermit(call))
        const guarded: Effect.Effect<AiModel.Completion, AgentError> = breaker === undefined
          ? permitted
          : last
          ? breaker.executeWaiting(permitted, (wait, refused) => run.waitOnCircuit(wait, refused))
          : breaker.execute(permitted)
        const hedged = hedge === undefined ? guarded : hedge.run(guarded, ({ after, hedge: n }) =>
          Effect.zipRight(
            Metric.increment(metrics.hedges),
            emit(bus, "HedgeStarted", () =>
              new AgentEvent.HedgeStarted({ taskId: run.task.id, model: model.name, hedge: n, afterMillis: Duration.toMillis(after) }, true))
          ))
        return retryPolicy === undefined ? hedged : retryPolicy.apply(hedged, run)
      }
    })

    const fallback = options.fallback
    const extraModels = fallback?.models ?? []
    const primaryTier = yield* tier(primary, extraModels.length === 0)
    const retryAfterMax = Duration.decode(
      (options.retry === false ? undefined : options.retry?.retryAfterMax) ?? Retry.defaults.retryAfterMax
    )
    const mayFallThrough = fallback?.fallThrough ?? Fallback.defaults.fallThrough
    const fallThrough = fallback?.retryAfterAboveMax === "fail"
      ? (error: AgentError) =>
        mayFallThrough(error) &&
        !("retryAfter" in error && error.retryAfter !== undefined && Duration.greaterThan(error.retryAfter, retryAfterMax))
      : mayFallThrough
    const extraTiers = yield* Effect.forEach(
      extraModels,
      (model, i) => Effect.map(tier(model, i === extraModels.length - 1), (run) => ({ name: model.name, run }))
    )
    const chained = fallback !== undefined && (extraTiers.length > 0 || fallback.staticAnswer !== undefined)

    /** The answer through the fallback chain, saying whether a later tier gave it. */
    const answerDegraded = (
      request: AiModel.CompletionRequest,
      run: TaskRun
    ): Effect.Effect<Fallback.Answered<AiModel.Completion, AgentError>, AgentError | Fallback.AllTiersFailed<AgentError>> => {
      const staticTier = fallback?.staticAnswer === undefined ? [] : [
        Fallback.fixed(
          "static",
          new AiModel.Completion({
            text: fallback.staticAnswer(run.task),
            finishReason: "stop",
            usage: new AiModel.Usage({ promptTokens: 0, completionTokens: 0 }),
            model: "static"
          })
        )
      ]
      return Effect.tap(
        Fallback.run(
          [
            Fallback.tier(primary.name, primaryTier(request, run)),
            ...extraTiers.map(({ name, run: tierRun }) => Fallback.tier(name, tierRun(request, run))),
            ...staticTier
          ],
          { fallThrough }
        ),
        (answered) =>
          answered.degraded
            ? Effect.zipRight(
              run.traced ? spanEvent("fallback", { tier: answered.tier, failures: answered.failures.length }) : Effect.void,
              Effect.zipRight(Metric.increment(metrics.fallbacks),
              emit(bus, "FallbackUsed", () =>
                new AgentEvent.FallbackUsed({
                  taskId: run.task.id,
                  tier: answered.tier,
                  failures: answered.failures.map(({ error, tier }) => ({ tier, error: ErrorInfo.fromError(error) }))
                }, true)))
            )
            : Effect.void
      )
    }

    /** The task's record, its metrics and its `TaskFinished` event, once its outcome is known. */
    const finish = (
      run: TaskRun,
      start: number,
      outcome: AnswerExit,
      shared?: Sharing
    ): Effect.Effect<TaskSucceeded, TaskFailed> =>
      // Interrupting the caller ends the task without a record; anything else gives one.
      Exit.isFailure(outcome) && Cause.isInterruptedOnly(outcome.cause)
        ? Effect.interrupt
        : Effect.withFiberRuntime((fiber) => {
          const durationMs = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis() - start
          const labels = fiber.getFiberRef(FiberRef.currentMetricLabels)
          const succeeded = Exit.isSuccess(outcome)
          metrics.taskDuration.unsafeUpdate(durationMs, labels)
          metrics.tasks.unsafeUpdate(1, labels)
          ;(succeeded ? succeededCount : failedCount).unsafeUpdate(1, labels)
          const { task } = run
          const attempts = shared?.attempts ?? run.attempts
          const coalesced = shared?.coalesced === undefined ? {} : { coalesced: shared.coalesced }
          const extra = run.budgetWaitMs > 0 ? { ...coalesced, budgetWaitMs: run.budgetWaitMs } : coalesced
          let ended: Effect.Effect<TaskSucceeded, TaskFailed>
          if (Exit.isFailure(outcome)) {
            ended = Effect.fail(
              new TaskFailed({ id: task.id, error: causeInfo(outcome.cause), attempts, durationMs, ...extra }, true)
            )
          } else {
            // the primary's own completion, or the fallback chain's answer
            const answered = outcome.value
            const completion = answered instanceof AiModel.Completion ? answered : answered.value
            ended = Effect.succeed(unsafeConstruct(TaskSucceeded, {
              id: task.id,
              output: completion.text,
              attempts,
              model: completion.model,
              degraded: answered instanceof AiModel.Completion ? false : answered.degraded,
              durationMs,
              ...extra,
              ...(shared?.memoized === true ? { memoized: true } : {}),
              _tag: "TaskSucceeded",
              status: "succeeded"
            }))
          }
          return bus.wants("TaskFinished")
            ? Effect.zipRight(
              bus.publish(
                new AgentEvent.TaskFinished({ taskId: task.id, status: succeeded ? "succeeded" : "failed", attempts, durationMs }, true)
              ),
              ended
            )
            : ended
        })

    /**
     * How a task gets its answer when identical tasks may share one: through the memo (a stored
     * answer, or one computation per key), then the coalescer (one call in flight per key).
     * Undefined when neither is on: the task answers alone.
     */
    const share = yield* makeSharing(options, bus)

    const runTask = (task: AgentTask, window: TaskWindow | undefined): Effect.Effect<TaskSucceeded, TaskFailed> =>
      Effect.withFiberRuntime((fiber) => {
        const services = fiber.currentDefaultServices
        const start = Context.get(services, Clock.Clock).unsafeCurrentTimeMillis()
        const run = new TaskRun(task, window, shared, start + deadlineMillis)
        // The task was validated when it was decoded; don't validate its parts again per call.
        const request = unsafeConstruct(AiModel.CompletionRequest, { prompt: task.prompt, maxTokens: task.maxTokens ?? maxTokens })
        const answer: Effect.Effect<
          AiModel.Completion | Fallback.Answered<AiModel.Completion, AgentError>,
          AgentError | Fallback.AllTiersFailed<AgentError>
        > = chained ? answerDegraded(request, run) : primaryTier(request, run)
        const answered = share === undefined
          ? Effect.flatMap(Effect.exit(answer), (outcome) => finish(run, start, outcome))
          : Effect.flatMap(share(request, run, answer), (shared) => finish(run, start, shared.exit, shared))
        const work = bus.wants("TaskStarted")
          ? Effect.zipRight(bus.publish(new AgentEvent.TaskStarted({ taskId: task.id }, true)), answered)
          : answered
        // A span per task when a tracer records spans. Effect's default tracer records nothing,
        // and the span's parent context costs a copy of the fiber's refs (~10 µs per task, 30 at
        // 1,000 in flight: bench/lean.ts), so under it there is none. Never a stack trace.
        if (Context.get(services, Tracer.Tracer) === nativeTracer || !fiber.getFiberRef(FiberRef.currentTracerEnabled)) return work
        run.traced = true
        return Effect.withSpan(work, "AgentService.process", { attributes: { "task.id": task.id }, captureStackTrace: false })
      })

    const process = (task: AgentTask) => runTask(task, undefined)

    function processAll(tasks: Iterable<AgentTask>): Stream.Stream<TaskResult>
    function processAll<E, R>(tasks: Stream.Stream<AgentTask, E, R>): Stream.Stream<TaskResult, E, R>
    function processAll<E, R>(tasks: Stream.Stream<AgentTask, E, R> | Iterable<AgentTask>) {
      const stream = Stream.StreamTypeId in tasks ? tasks : Stream.fromIterable(tasks)
      return Stream.suspend(() => {
        // Up to `maxTasks` held at once; of those, `concurrency` awake when a new one starts.
        const window = new TaskWindow(awake)
        const settle = (task: AgentTask): Effect.Effect<TaskResult> =>
          window.admit(Effect.catchAll(runTask(task, window), (failed) => Effect.succeed(failed)))
        return Stream.mapEffect(stream, settle, { concurrency: maxTasks, unordered: true })
      })
    }

    // -------------------------------------------------------------------------
    // streaming answers
    // -------------------------------------------------------------------------

    const streamOptions = options.stream ?? {}
    const sourceModels: Arr.NonEmptyReadonlyArray<AiModel.AiModel.Service> = [primary, ...extraModels]
    const modelBreakers = new Map<string, CircuitBreaker.CircuitBreaker>()
    if (breakers !== undefined) {
      for (const model of sourceModels) modelBreakers.set(model.name, yield* breakers.get(model.name))
    }
    /**
     * A source whose attempt holds a permit while its stream is open (under an adaptive limit, a
     * plain permit up to its `max`: a stream's open time is no latency to learn from), after
     * reserving from the model's token budget; the reservation settles with the usage of the
     * final chunk, or is kept whole when the stream ends without one.
     */
    const permitted = (request: AiModel.CompletionRequest) => (source: StreamingAnswer.Source): StreamingAnswer.Source => {
      const budget = budgets.get(source.name)
      if (budget === undefined) {
        return { ...source, stream: (delivered) => Stream.unwrapScoped(Effect.as(bulkhead.takePermits(1), source.stream(delivered))) }
      }
      const cost = TokenBudget.requestCost(request)
      return {
        ...source,
        stream: (delivered) =>
          Stream.unwrapScoped(Effect.gen(function*() {
            let usage: AiModel.Usage | undefined
            let report: AiModel.RateLimits | undefined
            yield* Effect.acquireRelease(
              // A stream's source speaks in model errors: a cost the budget can never hold is
              // a request this client can never send.
              Effect.catchTag(budget.reserve(cost), "BudgetExceeded", (exceeded) =>
                Effect.fail(new AiModel.InvalidRequest({ model: source.name, reason: exceeded.message }))),
              (held) =>
                Effect.zipRight(
                  held.settle(usage === undefined ? held.cost : TokenBudget.usageCost(usage)),
                  report === undefined ? Effect.void : budget.adopt(report)
                )
            )
            yield* bulkhead.takePermits(1)
            // usage and the report come on the final chunk: noted as chunks pass, no effect per chunk
            return Stream.mapChunks(source.stream(delivered), (chunks) => {
              for (const chunk of chunks) {
                if (chunk.usage !== undefined) usage = chunk.usage
                if (chunk.rateLimits !== undefined) report = chunk.rateLimits
              }
              return chunks
            })
          }))
      }
    }

    const stream = (task: AgentTask): Stream.Stream<AiModel.CompletionChunk, StreamError> =>
      Stream.unwrap(Effect.map(Clock.currentTimeMillis, (start) => {
        const run = new TaskRun(task, undefined, shared, start + deadlineMillis)
        const request = unsafeConstruct(AiModel.CompletionRequest, { prompt: task.prompt, maxTokens: task.maxTokens ?? maxTokens })
        const source = (model: AiModel.AiModel.Service) => permitted(request)(StreamingAnswer.fromModel(model, request))
        const sources: Arr.NonEmptyArray<StreamingAnswer.Source> = [source(sourceModels[0]), ...sourceModels.slice(1).map(source)]
        if (fallback?.staticAnswer !== undefined) {
          const text = fallback.staticAnswer(task)
          const usage = new AiModel.Usage({ promptTokens: 0, completionTokens: 0 })
          sources.push({
            name: "static",
            canContinue: false,
            stream: () => Stream.make(new AiModel.CompletionChunk({ delta: text, finishReason: "stop", usage }, true))
          })
        }
        const last = sourceModels.length - 1
        const answer = StreamingAnswer.make<AiModel.ModelError, never, AgentError, never>({
          firstChunk: streamOptions.firstChunk ?? timeout,
          ...(streamOptions.betweenChunks === undefined ? {} : { betweenChunks: streamOptions.betweenChunks }),
          ...(streamOptions.continue === undefined ? {} : { continue: streamOptions.continue }),
          fallThrough,
          policy: (started, source) => {
            const breaker = modelBreakers.get(source.name)
            const index = sourceModels.findIndex((model) => model.name === source.name)
            const guarded = breaker === undefined
              ? started
              : index === last
              ? breaker.executeWaiting(started, (wait, refused) => run.waitOnCircuit(wait, refused))
              : breaker.execute(started)
            const retryPolicy = index === last ? lastTierRetry : earlyTierRetry
            return retryPolicy === undefined || index < 0 ? guarded : retryPolicy.apply(guarded, run)
          },
          onStarted: ({ failures, index, source }) =>
            index === 0 ? Effect.void : Effect.zipRight(
              Metric.increment(metrics.fallbacks),
              emit(bus, "FallbackUsed", () =>
                new AgentEvent.FallbackUsed({
                  taskId: task.id,
                  tier: source,
                  failures: failures.map(({ error, tier }) => ({ tier, error: ErrorInfo.fromError(error) }))
                }, true))
            ),
          onContinued: ({ deliveredChars, error, source }) =>
            emit(bus, "StreamContinued", () =>
              new AgentEvent.StreamContinued({ taskId: task.id, model: source, deliveredChars, error: ErrorInfo.fromError(error) }, true))
        })
        const started = emit(bus, "TaskStarted", () => new AgentEvent.TaskStarted({ taskId: task.id }, true))
        return Stream.ensuringWith(
          Stream.concat(Stream.drain(Stream.fromEffect(started)), answer(sources)),
          (exit) =>
            Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause) ? Effect.void : Effect.flatMap(Clock.currentTimeMillis, (now) =>
              emit(bus, "TaskFinished", () =>
                new AgentEvent.TaskFinished({
                  taskId: task.id,
                  status: Exit.isSuccess(exit) ? "succeeded" : "failed",
                  attempts: run.attempts,
                  durationMs: now - start
                }, true)))
        )
      }))

    const subscribe = bus.subscribe({ strategy: "suspend" })
    const limitState = adaptive === undefined
      ? Effect.map(bulkhead.stats, ({ active, permits, queued }) => ({ limit: permits, active, queued }))
      : Effect.map(adaptive.stats, ({ active, limit, queued }) => ({ limit, active, queued }))
    const flow = Effect.zipWith(
      limitState,
      Effect.forEach(budgets, ([name, budget]) => Effect.map(budget.state, (state) => [name, state] as const)),
      (limits, states): FlowState => ({ ...limits, budgets: Object.fromEntries(states) })
    )
    return AgentService.of({
      process,
      processAll,
      stream,
      events: Stream.unwrapScoped(subscribe),
      subscribe,
      bus,
      flow
    })
  })

/** How one task's answer ended: the primary's completion or the fallback chain's answer, or why not. */
type AnswerExit = Exit.Exit<
  AiModel.Completion | Fallback.Answered<AiModel.Completion, AgentError>,
  AgentError | Fallback.AllTiersFailed<AgentError>
>

/** A computation of an answer that identical tasks may share: its outcome and the calls it made. */
interface Computed {
  readonly exit: AnswerExit
  readonly attempts: number
}

/** A task's answer as it got it: alone, through the memo, or shared with identical tasks. */
interface Sharing extends Computed {
  readonly coalesced?: Coalesced
  readonly memoized?: boolean
}

type Share = (
  request: AiModel.CompletionRequest,
  run: TaskRun,
  answer: Effect.Effect<AiModel.Completion | Fallback.Answered<AiModel.Completion, AgentError>, AgentError | Fallback.AllTiersFailed<AgentError>>
) => Effect.Effect<Sharing>

/**
 * A memo key: the request's key, compared by it alone, carrying how the asking task would
 * compute the answer (the memo runs the first asker's). A failed computation fails the lookup,
 * so the memo keeps no failure.
 */
class MemoKey implements Equal.Equal {
  constructor(readonly key: string, readonly compute: Effect.Effect<Computed, Computed>) {}
  [Equal.symbol](that: Equal.Equal): boolean {
    return that instanceof MemoKey && that.key === this.key
  }
  [Hash.symbol](): number {
    return Hash.cached(this, Hash.string(this.key))
  }
}

/** What the memo layer answers: the computation, and whether it was stored already. */
interface Recalled {
  readonly computed: Computed
  readonly memoized: boolean
}

/** `coalesce` and `memo` as one step per task; undefined when both are off. */
const makeSharing = (options: Options, bus: EventBus.EventBus.Service): Effect.Effect<Share | undefined> =>
  Effect.gen(function*() {
    const coalesceKey = options.coalesce === undefined || options.coalesce === false
      ? undefined
      : options.coalesce === true
      ? requestKey
      : options.coalesce.key ?? requestKey
    const memoOptions = options.memo
    if (coalesceKey === undefined && memoOptions === undefined) return undefined
    const coalesce = coalesceKey === undefined ? undefined : yield* Coalesce.make<Recalled>()
    const memoKey = memoOptions?.key ?? requestKey
    const memo = memoOptions === undefined ? undefined : yield* Memo.make<MemoKey, Computed, Computed>({
      lookup: (key) => key.compute,
      name: "AgentService",
      ...(memoOptions.capacity === undefined ? {} : { capacity: memoOptions.capacity }),
      ...(memoOptions.timeToLive === undefined ? {} : { timeToLive: memoOptions.timeToLive })
    })

    const recall = (request: AiModel.CompletionRequest, run: TaskRun, compute: Effect.Effect<Computed>): Effect.Effect<Recalled> => {
      if (memo === undefined) return Effect.map(compute, (computed) => ({ computed, memoized: false }))
      const key = memoKey(request)
      const stored = Effect.flatMap(compute, (computed) => Exit.isSuccess(computed.exit) ? Effect.succeed(computed) : Effect.fail(computed))
      return Effect.matchEffect(memo.getEither(new MemoKey(key, stored)), {
        onFailure: (computed) => Effect.succeed<Recalled>({ computed, memoized: false }),
        onSuccess: (either): Effect.Effect<Recalled> =>
          Either.isRight(either)
            ? Effect.succeed({ computed: either.right, memoized: false })
            : Effect.as(
              emit(bus, "Memoized", () => new AgentEvent.Memoized({ taskId: run.task.id, key }, true)),
              { computed: either.left, memoized: true }
            )
      })
    }

    const asSharing = ({ computed, memoized }: Recalled, coalesced?: Coalesced): Sharing => ({
      exit: computed.exit,
      attempts: memoized ? 0 : computed.attempts,
      ...(memoized ? { memoized } : {}),
      ...(coalesced === undefined ? {} : { coalesced })
    })

    return (request, run, answer) => {
      const compute = Effect.map(Effect.exit(answer), (exit): Computed => ({ exit, attempts: run.attempts }))
      const recalled = recall(request, run, compute)
      if (coalesce === undefined || coalesceKey === undefined) return Effect.map(recalled, (r) => asSharing(r))
      const key = coalesceKey(request)
      return Effect.flatMap(coalesce.share(key, recalled), ({ callers, exit, role }) => {
        // the shared call ends only by answering; a defect in it is every sharer's defect
        if (Exit.isFailure(exit)) return Effect.succeed<Sharing>({ exit: Exit.failCause(exit.cause), attempts: run.attempts })
        const sharing = asSharing(exit.value, { role, callers })
        return role === "joined"
          ? Effect.as(emit(bus, "Coalesced", () => new AgentEvent.Coalesced({ taskId: run.task.id, key, waiters: callers }, true)), sharing)
          : Effect.succeed(sharing)
      })
    }
  })

/**
 * The error of a failed task: its typed error, or a defect (a bug in a model adapter, say) as
 * `Defect`, so one task's defect gives that task a record instead of ending the whole batch.
 */
const causeInfo = (cause: Cause.Cause<AgentError | Fallback.AllTiersFailed<AgentError>>): ErrorInfo.ErrorInfo =>
  Option.match(Cause.failureOption(cause), {
    onSome: ErrorInfo.fromError,
    onNone: () => {
      const defect = Cause.squash(cause)
      return { _tag: "Defect", message: defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect) }
    }
  })

/** The model an error names, when it names one (a breaker's error names its breaker). */
const modelOf = (error: AgentError): string => "model" in error ? error.model : "breaker" in error ? error.breaker : ""

/**
 * The service as a layer, from its options and the `AiModel` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<AgentService, never, AiModel.AiModel> =>
  Layer.scoped(AgentService, make(options))

/**
 * The service as a layer, its options read from Effect `Config` (each option, or each nested
 * group, a `Config` of its own), so an app configures it from the environment like its other
 * layers. Options that are code (fallback models, predicates) stay plain values
 * (`Config.succeed`).
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { AgentService } from "wiz-effect"
 *
 * const agent = AgentService.layerConfig({
 *   concurrency: Config.integer("AGENT_CONCURRENCY").pipe(Config.withDefault(8)),
 *   timeout: Config.duration("AGENT_TIMEOUT").pipe(Config.withDefault("30 seconds")),
 *   retry: Config.all({ maxAttempts: Config.integer("AGENT_RETRY_ATTEMPTS").pipe(Config.withDefault(4)) })
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<AgentService, ConfigError.ConfigError, AiModel.AiModel> =>
  Layer.scoped(AgentService, Effect.flatMap(Config.unwrap(options), make))
