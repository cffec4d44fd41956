/**
 * The agent task processor: the seed's `AgentTaskProcessor`, rebuilt so each policy sits where
 * it does no harm. Per attempt: `breaker → permit → timeout → model`; around the attempt,
 * optional hedging; around that, the one retry policy (so retries cannot stack); around that,
 * the optional fallback chain. A concurrency permit is held only while a request is on the
 * wire, never through a backoff sleep (the seed held it through every sleep), and an open
 * breaker fails an attempt at once with a `retryAfter` the retry policy may wait out or hand to
 * the fallback tier.
 *
 * This module reads the options and composes the parts, each a module of its own:
 * `Policies` (the state every task shares: permit, breakers, token budgets, retry and hedge
 * policies), `Tier` (one model's attempt pipeline), `FallbackChain` (the tiers in order),
 * `Sharing` (memo and coalescing), `TaskRun` (one task while it runs), `TaskRecord` (the record it
 * ends with) and `AnswerStream` (the streaming path). Every step publishes a typed
 * {@link AgentEvent} on `events` and updates a `Metric` (`AgentMetrics`).
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
import { Cause, Clock, Config, Context, Data, Duration, Effect, Exit, FiberRef, Layer, Option, Stream, Tracer } from "effect"
import type { ConfigError, Scope } from "effect"
import type * as AdaptiveLimit from "../concurrency/AdaptiveLimit.js"
import * as AgentEvent from "../events/AgentEvent.js"
import * as EventBus from "../events/EventBus.js"
import * as AiModel from "../model/AiModel.js"
import type * as Budget from "../policy/Budget.js"
import type * as CircuitBreaker from "../policy/CircuitBreaker.js"
import type * as Fallback from "../policy/Fallback.js"
import type * as Hedge from "../policy/Hedge.js"
import type * as Retry from "../policy/Retry.js"
import type * as TokenBudget from "../policy/TokenBudget.js"
import type * as StreamingAnswer from "../stream/StreamingAnswer.js"
import type { StoreUnavailable } from "../store/SharedStore.js"
import { TaskWindow } from "../internal/taskWindow.js"
import { type AgentTask, requestOf, type TaskFailed, type TaskResult, type TaskSucceeded } from "./AgentTask.js"
import * as AnswerStream from "./AnswerStream.js"
import * as BatchStop from "./BatchStop.js"
import * as FallbackChain from "./FallbackChain.js"
import * as Policies from "./Policies.js"
import * as Sharing from "./Sharing.js"
import * as TaskRecord from "./TaskRecord.js"
import * as TaskRun from "./TaskRun.js"

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
  /**
   * Stop after this many tasks in a row fail with `AuthenticationFailed` (the provider refused
   * the credentials: HTTP 401/403, not a quota): every task that starts after gets a
   * `BatchStopped` record at once, without a call (see `BatchStop`). Off (`false`) by default;
   * `wiz run` stops after 3.
   */
  readonly stopOnAuthFailures?: number | false
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
   * call served (a call that served only its own task was not shared: no `coalesced`). A task
   * waiting on another task's call is asleep in `processAll`, like one in a backoff, so it holds
   * no place. `true`, or `{ key }` to say what "identical" means (by default the request's
   * prompt, `maxTokens`, `system` and `temperature`). Off unless given.
   */
  readonly coalesce?: boolean | { readonly key?: (request: AiModel.CompletionRequest) => string }
  /**
   * Keep answers for repeated requests (the seed's `LazyAIProcessor`, on `Memo`): a request
   * answered within `timeToLive` is answered again without a call (its record says `memoized`),
   * and so is one asked while an identical request is being answered: it waits for that answer,
   * asleep, with no call of its own (`attempts: 0`). Failures are never kept. Off unless given.
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

export {
  /**
   * The key of a request for coalescing and memoization: its prompt and the parameters that
   * change the answer.
   *
   * @since 0.1.0
   * @category coalescing
   */
  requestKey
} from "./Sharing.js"

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
  concurrency: Policies.defaults.concurrency,
  maxTasks: Policies.defaults.maxTasks,
  maxTokens: 256,
  timeout: Policies.defaults.timeout,
  deadline: Duration.minutes(2),
  tokenBudget: Policies.defaults.tokenBudget
} as const

/**
 * What can end one tier's work on a task.
 *
 * @since 0.1.0
 * @category errors
 */
export type AgentError =
  | AiModel.ModelError
  | CircuitBreaker.CircuitOpen
  | Retry.DeadlineExceeded
  | TokenBudget.BudgetExceeded
  | StoreUnavailable

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
 * What a reader of `stream` may be told as the answer goes.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamOptions {
  /**
   * Called with the model's name (the tier's) each time a tier starts answering: before the
   * first chunk, and again when another tier continues a broken answer. A gateway names it in
   * every chunk, as a whole answer's `Completion.model` does.
   */
  readonly onAnswering?: (model: string) => Effect.Effect<void>
}

export {
  /**
   * Counters and latencies of the agent, as Effect `Metric`s.
   *
   * @since 0.1.0
   * @category metrics
   */
  metrics
} from "./AgentMetrics.js"

/**
 * A task's record and the completion behind it: why it ended (`finishReason`) and the tokens it
 * used (`usage`), which a record does not carry (`AgentService.complete`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Completed {
  readonly record: TaskSucceeded
  readonly completion: AiModel.Completion
}

/**
 * A task `complete` could not answer: its `TaskFailed` record, and the typed error that ended
 * it (a provider's `retryAfter` included, which a record does not carry); undefined for a
 * defect.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotCompleted extends Data.TaggedError("NotCompleted")<{
  readonly record: TaskFailed
  readonly error: FallbackChain.AnswerError | BatchStop.BatchStopped | undefined
}> {
  override get message(): string {
    return this.record.message
  }
}

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
    /**
     * `process`, also giving the completion the record was made from: its finish reason and
     * usage (a gateway answers a chat request with both). Same policies, same record, same events.
     */
    readonly complete: (task: AgentTask) => Effect.Effect<Completed, NotCompleted>
    /**
     * A task window of its own, as `processAll` runs its tasks in, for callers that submit the
     * tasks of one batch from many fibers (a durable worker's units): each task runs once fewer
     * than `concurrency` are awake, and its deadline starts then, not while it waits its turn.
     */
    readonly window: Effect.Effect<(task: AgentTask) => Effect.Effect<TaskResult>>
    /** Answer many tasks, `concurrency` at a time, emitting each result as it finishes. */
    readonly processAll: {
      (tasks: Iterable<AgentTask>): Stream.Stream<TaskResult>
      <E, R>(tasks: Stream.Stream<AgentTask, E, R>): Stream.Stream<TaskResult, E, R>
    }
    /**
     * Answer one task as the model produces it, through the same policies: retried, or handed to
     * the next tier, only before its first chunk (or continued after a break, with `continue`);
     * a stream that ends without its final chunk, or breaks after it, fails with
     * `IncompleteStream`: the text delivered, and the error that broke it as its `cause`.
     * A permit is held while an attempt's stream is open (under `concurrency: "adaptive"`, a
     * plain one up to the limit's `max`: a stream's open time is no latency to learn from); the
     * reader's pace paces the model. The token budget is charged as for `process`, and settled
     * with the usage of the final chunk. `options.onAnswering` is told which tier answers.
     */
    readonly stream: (task: AgentTask, options?: StreamOptions) => Stream.Stream<AiModel.CompletionChunk, StreamError>
    /**
     * `stream` as the pull beneath it, in the caller's scope (closing it ends the answer): each
     * run gives the next chunks, fails with `None` at the end or `Some(error)`. For a reader that
     * pulls the chunks itself (a gateway waits for the first before it answers), without the
     * channel `Stream.toPull` runs over a stream, which costs about as much as the rest of a
     * stream's policies together. Same policies, events and errors as `stream`.
     */
    readonly pull: (task: AgentTask, options?: StreamOptions) => Effect.Effect<AnswerStream.AnswerPull, never, Scope.Scope>
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
 * Build the service from its options and the `AiModel` in context. It publishes on the
 * `EventBus` in context when there is one, else on a bus of its own, ended with the scope.
 *
 * The parts, in the order a task meets them: {@link Sharing} (memo, coalescer), the
 * {@link FallbackChain} of {@link Tier}s (each `breaker → budget → permit → time limit →
 * model`, hedged, retried, on the service's {@link Policies}), then {@link TaskRecord}; a
 * {@link TaskRun} carries the task through them. `processAll` runs tasks in a task window;
 * `stream` is {@link AnswerStream} on the same policies and chain.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<AgentService.Service, never, AiModel.AiModel | Scope.Scope> =>
  Effect.gen(function*() {
    const primary = yield* AiModel.AiModel
    const bus = yield* Option.match(yield* Effect.serviceOption(EventBus.EventBus), {
      onNone: () => EventBus.make(),
      onSome: Effect.succeed
    })
    const stop = options.stopOnAuthFailures === undefined || options.stopOnAuthFailures === false
      ? undefined
      : yield* BatchStop.make(options.stopOnAuthFailures)
    const policies = yield* Policies.make(options, bus)
    const context = TaskRun.context(bus, options.deadline ?? defaults.deadline, stop, policies.throttling)
    const maxTokens = options.maxTokens ?? defaults.maxTokens
    const chain = yield* FallbackChain.make(policies, primary, options)
    const share = yield* Sharing.make(options, bus)

    /**
     * One task, from its request to its record; `window` is `processAll`'s, if it runs there.
     * With `withCompletion`, the record comes with the completion it was made from.
     */
    function runTask(task: AgentTask, window: TaskWindow | undefined): Effect.Effect<TaskSucceeded, TaskFailed>
    function runTask(task: AgentTask, window: undefined, withCompletion: true): Effect.Effect<Completed, NotCompleted>
    function runTask(
      task: AgentTask,
      window: TaskWindow | undefined,
      withCompletion = false
    ): Effect.Effect<TaskSucceeded | Completed, TaskFailed | NotCompleted> {
      return Effect.withFiberRuntime<TaskSucceeded | Completed, TaskFailed | NotCompleted>((fiber) => {
        const services = fiber.currentDefaultServices
        const start = Context.get(services, Clock.Clock).unsafeCurrentTimeMillis()
        const run = TaskRun.make(task, context, start, window)
        const finish = (
          outcome: Exit.Exit<FallbackChain.Answer, FallbackChain.AnswerError | BatchStop.BatchStopped>,
          shared?: Sharing.Sharing
        ): Effect.Effect<TaskSucceeded | Completed, TaskFailed | NotCompleted> => {
          const record = TaskRecord.finish(run, start, outcome, shared)
          if (!withCompletion) return record
          // a record that succeeded came from an answer
          return Exit.isSuccess(outcome)
            ? Effect.map(record, (record): Completed => ({ record, completion: FallbackChain.completionOf(outcome.value) }))
            : Effect.mapError(record, (failed) =>
              new NotCompleted({ record: failed, error: Option.getOrUndefined(Cause.failureOption(outcome.cause)) }))
        }
        if (stop?.stopped !== undefined) return finish(Exit.fail(stop.stopped))
        const request = requestOf(task, maxTokens)
        const answer = chain.answer(request, run)
        const answered = share === undefined
          ? Effect.flatMap(Effect.exit(answer), (outcome) => finish(outcome))
          : Effect.flatMap(share(request, run, answer), (shared) => finish(shared.exit, shared))
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
    }

    function processAll(tasks: Iterable<AgentTask>): Stream.Stream<TaskResult>
    function processAll<E, R>(tasks: Stream.Stream<AgentTask, E, R>): Stream.Stream<TaskResult, E, R>
    function processAll<E, R>(tasks: Stream.Stream<AgentTask, E, R> | Iterable<AgentTask>) {
      const stream = Stream.StreamTypeId in tasks ? tasks : Stream.fromIterable(tasks)
      // Up to `maxTasks` held at once; of those, `awake` awake when a new one starts.
      return Stream.unwrap(Effect.map(window, (settle) =>
        Stream.mapEffect(stream, settle, { concurrency: policies.maxTasks, unordered: true })))
    }

    const window = Effect.sync(() => {
      const window = new TaskWindow(policies.awake)
      return (task: AgentTask): Effect.Effect<TaskResult> =>
        window.admit(Effect.catchAll(runTask(task, window), (failed) => Effect.succeed(failed)))
    })

    const subscribe = bus.subscribe({ strategy: "suspend" })
    const answers = yield* AnswerStream.make(policies, chain, context, { maxTokens, ...(options.stream ? { stream: options.stream } : {}) })
    return AgentService.of({
      process: (task) => runTask(task, undefined),
      complete: (task) => runTask(task, undefined, true),
      window,
      processAll,
      stream: answers.stream,
      pull: answers.pull,
      events: Stream.unwrapScoped(subscribe),
      subscribe,
      bus,
      flow: policies.flow
    })
  })

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
