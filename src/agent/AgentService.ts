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
import { Cause, Clock, Context, Duration, Effect, Exit, FiberRef, Layer, Metric, MetricBoundaries, Option, PubSub, Stream } from "effect"
import type { Scope } from "effect"
import * as Bulkhead from "../concurrency/Bulkhead.js"
import * as AgentEvent from "../events/AgentEvent.js"
import * as AiModel from "../model/AiModel.js"
import * as Budget from "../policy/Budget.js"
import * as CircuitBreaker from "../policy/CircuitBreaker.js"
import * as Fallback from "../policy/Fallback.js"
import * as Hedge from "../policy/Hedge.js"
import * as Retry from "../policy/Retry.js"
import * as Timeout from "../policy/Timeout.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import { type AgentTask, TaskFailed, type TaskResult, TaskSucceeded } from "./AgentTask.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Tasks `processAll` works on at once. */
  readonly concurrency?: number
  /** Requests on the wire at once (the permit); defaults to `concurrency`. */
  readonly maxInFlight?: number
  /** `maxTokens` for a task that does not set its own. */
  readonly maxTokens?: number
  /**
   * Per-attempt timeout: the attempt is interrupted and fails with `ModelTimeout`. It costs a
   * fiber per attempt (~20 µs, bench/main.ts); `Duration.infinity` turns it off.
   */
  readonly timeout?: Duration.DurationInput
  /** The one retry policy; `false` makes one attempt per tier. */
  readonly retry?: Omit<Retry.Options, "onRetry" | "onGiveUp" | "budget" | "attemptTimeout"> | false
  /** The retry budget shared by every task; `false` for none. */
  readonly retryBudget?: Budget.Options | false
  /** One circuit breaker per model name; `false` for none. */
  readonly breaker?: Omit<CircuitBreaker.Options, "name"> | false
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
}

/**
 * `concurrency: 8`, `maxTokens: 256`, `timeout: 30 s`, retries per `Retry.defaults`, a retry
 * budget per `Budget.defaults`, a breaker per `CircuitBreaker.defaults`, no hedging, no
 * fallback.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  concurrency: 8,
  maxTokens: 256,
  timeout: Duration.seconds(30)
} as const

/**
 * What can end one tier's work on a task.
 *
 * @since 0.1.0
 * @category errors
 */
export type AgentError = AiModel.ModelError | CircuitBreaker.CircuitOpen | Retry.DeadlineExceeded

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
    /** Everything the policies do from now on (subscribes when the stream starts). */
    readonly events: Stream.Stream<AgentEvent.AgentEvent>
    /**
     * Subscribe now, in a scope, so no event after this point is missed. Each subscriber has an
     * unbounded queue, so nothing is dropped: read it, or close its scope.
     */
    readonly subscribe: Effect.Effect<Stream.Stream<AgentEvent.AgentEvent>, never, Scope.Scope>
  }
}

const succeededCount = Metric.tagged(metrics.tasks, "status", "succeeded")
const failedCount = Metric.tagged(metrics.tasks, "status", "failed")

/** The task an attempt works for, so policy hooks can name it in their events. */
const currentTask = FiberRef.unsafeMake<string>("")

/**
 * Build the service from its options and the `AiModel` in context. Scoped: it runs a fiber
 * that republishes breaker transitions, ended with the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<AgentService.Service, never, AiModel.AiModel | Scope.Scope> =>
  Effect.gen(function*() {
    const primary = yield* AiModel.AiModel
    const concurrency = options.concurrency ?? defaults.concurrency
    const maxTokens = options.maxTokens ?? defaults.maxTokens
    const timeout = options.timeout ?? defaults.timeout
    const events = yield* PubSub.unbounded<AgentEvent.AgentEvent>()
    yield* Effect.addFinalizer(() => PubSub.shutdown(events))
    const publish = (event: AgentEvent.AgentEvent) => PubSub.publish(events, event)
    /** Publish an event about the task the current fiber works for, counting it in `metric`. */
    const emit = (metric: Metric.Metric.Counter<number> | undefined, event: (taskId: string) => AgentEvent.AgentEvent) =>
      Effect.flatMap(FiberRef.get(currentTask), (taskId) =>
        metric === undefined ? publish(event(taskId)) : Effect.zipRight(Metric.increment(metric), publish(event(taskId))))

    const bulkhead = yield* Bulkhead.make({ permits: options.maxInFlight ?? concurrency })

    const breakers = options.breaker === false ? undefined : yield* CircuitBreaker.makeKeyed(options.breaker ?? {})
    if (breakers !== undefined) {
      // Subscribed here, before any call can trip a breaker, so no transition is missed.
      yield* (yield* breakers.subscribe).pipe(
        Stream.runForEach(({ key, transition }) =>
          Effect.zipRight(
            Metric.increment(metrics.breakerTransitions),
            publish(
              new AgentEvent.BreakerTransition({
                breaker: key,
                from: transition.from,
                to: transition.to,
                atMillis: transition.at
              })
            )
          )
        ),
        Effect.forkScoped
      )
    }

    const retryBudget = options.retryBudget === false ? undefined : yield* Budget.make(options.retryBudget ?? {})
    const retryPolicy = options.retry === false ? undefined : Retry.make<AgentError>({
      ...options.retry,
      attemptTimeout: timeout,
      ...(retryBudget === undefined ? {} : { budget: retryBudget }),
      onRetry: ({ attempt, delay, error }) =>
        emit(metrics.retries, (taskId) =>
          new AgentEvent.RetryScheduled({
            taskId,
            model: modelOf(error),
            attempt,
            delayMillis: Duration.toMillis(delay),
            error: ErrorInfo.fromError(error)
          })),
      onGiveUp: ({ attempts, error, reason }) =>
        emit(undefined, (taskId) =>
          new AgentEvent.RetryGivenUp({ taskId, model: modelOf(error), reason, attempts, error: ErrorInfo.fromError(error) }))
    })

    const hedgeConfig = options.hedge === undefined || options.hedge === false ? undefined : options.hedge
    // Hedges have a budget of their own: sharing the retry budget would count each call's
    // first attempt twice (once per policy) and let hedges spend what retries need.
    const hedgeBudget = hedgeConfig === undefined || hedgeConfig.budget === false
      ? undefined
      : yield* Budget.make(hedgeConfig.budget ?? {})

    /** A model's own hedge, so a learned delay follows that model's latencies. */
    const hedgeFor = (model: string): Effect.Effect<Hedge.Hedge | undefined> => {
      if (hedgeConfig === undefined) return Effect.succeed(undefined)
      const { budget: _, ...hedgeOptions } = hedgeConfig
      return Hedge.make({
        ...hedgeOptions,
        ...(hedgeBudget === undefined ? {} : { budget: hedgeBudget }),
        onHedge: ({ after, hedge }) =>
          emit(metrics.hedges, (taskId) =>
            new AgentEvent.HedgeStarted({ taskId, model, hedge, afterMillis: Duration.toMillis(after) }))
      })
    }

    /** One tier: breaker → permit → timeout → model per attempt, hedged, retried. */
    const tier = Effect.fnUntraced(function*(model: AiModel.AiModel.Service) {
      const limitTime = Timeout.attempt({ duration: timeout, model: model.name })
      const hedge = yield* hedgeFor(model.name)
      return (request: AiModel.CompletionRequest, counter: { attempts: number }) => {
        const call = Effect.suspend(() => {
          counter.attempts++
          return Effect.zipRight(
            Metric.increment(metrics.attempts),
            bulkhead.withPermit(limitTime(model.generate(request)))
          )
        })
        const guarded: Effect.Effect<AiModel.Completion, AgentError> = breakers === undefined
          ? call
          : breakers.execute(model.name)(call)
        const hedged = hedge === undefined ? guarded : hedge.run(guarded)
        return retryPolicy === undefined ? hedged : retryPolicy.apply(hedged)
      }
    })

    const primaryTier = yield* tier(primary)
    const fallback = options.fallback
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
      fallback?.models ?? [],
      (model) => Effect.map(tier(model), (run) => ({ name: model.name, run }))
    )

    const answer = (
      task: AgentTask,
      request: AiModel.CompletionRequest,
      counter: { attempts: number }
    ): Effect.Effect<{ completion: AiModel.Completion; degraded: boolean }, AgentError | Fallback.AllTiersFailed<AgentError>> => {
      if (fallback === undefined || (extraTiers.length === 0 && fallback.staticAnswer === undefined)) {
        return Effect.map(primaryTier(request, counter), (completion) => ({ completion, degraded: false }))
      }
      const staticTier = fallback.staticAnswer === undefined ? [] : [
        Fallback.fixed(
          "static",
          new AiModel.Completion({
            text: fallback.staticAnswer(task),
            finishReason: "stop",
            usage: new AiModel.Usage({ promptTokens: 0, completionTokens: 0 }),
            model: "static"
          })
        )
      ]
      return Fallback.run(
        [
          Fallback.tier(primary.name, primaryTier(request, counter)),
          ...extraTiers.map(({ name, run }) => Fallback.tier(name, run(request, counter))),
          ...staticTier
        ],
        { fallThrough }
      ).pipe(
        Effect.tap((answered) =>
          answered.degraded
            ? Effect.zipRight(
              Metric.increment(metrics.fallbacks),
              publish(
                new AgentEvent.FallbackUsed({
                  taskId: task.id,
                  tier: answered.tier,
                  failures: answered.failures.map(({ error, tier }) => ({ tier, error: ErrorInfo.fromError(error) }))
                })
              )
            )
            : Effect.void
        ),
        Effect.map((answered) => ({ completion: answered.value, degraded: answered.degraded }))
      )
    }

    // A span per task, but not `Effect.fn`: it captures a stack trace per call, which measured
    // ~30 µs against ~9 µs for the span alone (bench/main.ts).
    const process = Effect.fnUntraced(function*(task: AgentTask) {
      const start = yield* Clock.currentTimeMillis
      const counter = { attempts: 0 }
      yield* publish(new AgentEvent.TaskStarted({ taskId: task.id }))
      // The task was validated when it was decoded; don't validate its parts again per call.
      const request = new AiModel.CompletionRequest({ prompt: task.prompt, maxTokens: task.maxTokens ?? maxTokens }, true)
      const outcome = yield* Effect.exit(Effect.locally(answer(task, request, counter), currentTask, task.id))
      // Interrupting the caller ends the task without a record; anything else gives one.
      if (Exit.isFailure(outcome) && Cause.isInterruptedOnly(outcome.cause)) return yield* Effect.interrupt
      const durationMs = (yield* Clock.currentTimeMillis) - start
      const status = Exit.isSuccess(outcome) ? "succeeded" : "failed"
      yield* Metric.update(metrics.taskDuration, durationMs)
      yield* Metric.increment(status === "succeeded" ? succeededCount : failedCount)
      yield* publish(new AgentEvent.TaskFinished({ taskId: task.id, status, attempts: counter.attempts, durationMs }))
      if (Exit.isFailure(outcome)) {
        return yield* new TaskFailed({
          id: task.id,
          error: causeInfo(outcome.cause),
          attempts: counter.attempts,
          durationMs
        }, true)
      }
      return new TaskSucceeded({
        id: task.id,
        output: outcome.value.completion.text,
        attempts: counter.attempts,
        model: outcome.value.completion.model,
        degraded: outcome.value.degraded,
        durationMs
      }, true)
    }, (effect, task) => Effect.withSpan(effect, "AgentService.process", { attributes: { "task.id": task.id } }))

    const settle = (task: AgentTask): Effect.Effect<TaskResult> =>
      Effect.catchAll(process(task), (failed) => Effect.succeed(failed))

    function processAll(tasks: Iterable<AgentTask>): Stream.Stream<TaskResult>
    function processAll<E, R>(tasks: Stream.Stream<AgentTask, E, R>): Stream.Stream<TaskResult, E, R>
    function processAll<E, R>(tasks: Stream.Stream<AgentTask, E, R> | Iterable<AgentTask>) {
      const stream = Stream.StreamTypeId in tasks ? tasks : Stream.fromIterable(tasks)
      return Stream.mapEffect(stream, settle, { concurrency, unordered: true })
    }

    return AgentService.of({
      process,
      processAll,
      events: Stream.fromPubSub(events),
      subscribe: Effect.map(PubSub.subscribe(events), Stream.fromQueue)
    })
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
