/**
 * What the agent and its policies did, as one `Schema` tagged union: a task queued, started and
 * finished (succeeded or failed, with its error), an attempt that failed and the retry scheduled
 * after it (with its delay and cause), a retry given up, a breaker transition, a wait for a
 * budget, a fallback tier used, a hedge started, a call coalesced with another, a streamed answer
 * continued after a mid-stream failure, and a progress report. `AgentService` publishes them;
 * the `EventBus` carries them to subscribers; every event encodes to JSON with this schema
 * ({@link toJson}, {@link jsonLines}) and decodes back ({@link fromJson}).
 *
 * A task's end is one event, `TaskFinished`, whose `status` says `succeeded` or `failed` (and,
 * when it failed, `error` says why): one case for a reader that counts outcomes, and the event
 * every existing subscriber already reads. An attempt that failed is `RetryScheduled` when
 * another follows (its `attempt`, `delayMillis` and `error`) and `RetryGivenUp` when none does.
 *
 * Events built by the agent itself can skip validation (`new TaskStarted({ taskId }, true)`):
 * validating data we built costs ~1.5 µs per event on the hot path.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { AgentEvent, AgentService } from "wiz-effect"
 *
 * const retries = Effect.gen(function* () {
 *   const agent = yield* AgentService.AgentService
 *   return agent.events.pipe(Stream.filter(AgentEvent.is("RetryScheduled")))
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Schema, Stream } from "effect"
import type { ParseResult } from "effect"
import { ErrorInfo } from "./ErrorInfo.js"

/**
 * A task was accepted and waits for its turn (a concurrency slot).
 *
 * @since 0.1.0
 * @category models
 */
export class TaskQueued extends Schema.TaggedClass<TaskQueued>()("TaskQueued", {
  taskId: Schema.String
}) {}

/**
 * A task was taken up.
 *
 * @since 0.1.0
 * @category models
 */
export class TaskStarted extends Schema.TaggedClass<TaskStarted>()("TaskStarted", {
  taskId: Schema.String
}) {}

/**
 * An attempt failed and another will start after `delayMillis`.
 *
 * @since 0.1.0
 * @category models
 */
export class RetryScheduled extends Schema.TaggedClass<RetryScheduled>()("RetryScheduled", {
  taskId: Schema.String,
  model: Schema.String,
  /**
   * The retry policy's number for the attempt about to start (2 for the first retry). It
   * counts attempts an open breaker refused, which task records do not (they count model calls).
   */
  attempt: Schema.Int,
  delayMillis: Schema.Number,
  error: ErrorInfo
}) {}

/**
 * The retry policy stopped retrying, and why.
 *
 * @since 0.1.0
 * @category models
 */
export class RetryGivenUp extends Schema.TaggedClass<RetryGivenUp>()("RetryGivenUp", {
  taskId: Schema.String,
  model: Schema.String,
  reason: Schema.Literal("not-retryable", "max-attempts", "budget", "deadline", "retry-after-too-long"),
  /** Attempts the retry policy made, those an open breaker refused included. */
  attempts: Schema.Int,
  error: ErrorInfo
}) {}

/**
 * A circuit breaker changed state.
 *
 * @since 0.1.0
 * @category models
 */
export class BreakerTransition extends Schema.TaggedClass<BreakerTransition>()("BreakerTransition", {
  breaker: Schema.String,
  from: Schema.String,
  to: Schema.String,
  atMillis: Schema.Number,
  /** For a transition to `Open`: the Clock time (ms) when it becomes half-open and probes. */
  untilMillis: Schema.optional(Schema.Number)
}) {}

/**
 * The shared store of budgets and breakers changed mode: `local` when it failed and this
 * process went on alone (with the reason), `shared` when it answers again.
 *
 * @since 0.1.0
 * @category models
 */
export class StoreStatus extends Schema.TaggedClass<StoreStatus>()("StoreStatus", {
  store: Schema.String,
  mode: Schema.Literal("shared", "local"),
  reason: Schema.optional(Schema.String)
}) {}

/**
 * A tier other than the first answered; `failures` says why each earlier tier did not.
 *
 * @since 0.1.0
 * @category models
 */
export class FallbackUsed extends Schema.TaggedClass<FallbackUsed>()("FallbackUsed", {
  taskId: Schema.String,
  tier: Schema.String,
  failures: Schema.Array(Schema.Struct({ tier: Schema.String, error: ErrorInfo }))
}) {}

/**
 * A hedged copy of an attempt was started because the first had not answered in time.
 *
 * @since 0.1.0
 * @category models
 */
export class HedgeStarted extends Schema.TaggedClass<HedgeStarted>()("HedgeStarted", {
  taskId: Schema.String,
  model: Schema.String,
  hedge: Schema.Int,
  afterMillis: Schema.Number
}) {}

/**
 * A task ended, answered (`status: "succeeded"`, with the `model` that answered and whether the
 * answer is `degraded`, when the publisher says) or not (`status: "failed"`, with its `error`).
 *
 * @since 0.1.0
 * @category models
 */
export class TaskFinished extends Schema.TaggedClass<TaskFinished>()("TaskFinished", {
  taskId: Schema.String,
  status: Schema.Literal("succeeded", "failed"),
  attempts: Schema.Int,
  durationMs: Schema.Number,
  /** On success: the model that answered. */
  model: Schema.optional(Schema.String),
  /** On success: whether a fallback tier answered. */
  degraded: Schema.optional(Schema.Boolean),
  /** On failure: the error that ended the task. */
  error: Schema.optional(ErrorInfo)
}) {}

/**
 * An attempt waited `waitMillis` for a budget (tokens per minute, requests per minute) before it
 * could start.
 *
 * @since 0.1.0
 * @category models
 */
export class BudgetWaited extends Schema.TaggedClass<BudgetWaited>()("BudgetWaited", {
  taskId: Schema.String,
  model: Schema.String,
  /** Which budget: `tokens`, `requests`, or a budget's own name. */
  budget: Schema.String,
  /** What the attempt asked of it (tokens, requests). */
  amount: Schema.Number,
  waitMillis: Schema.Number
}) {}

/**
 * A task's call joined an identical call already in flight instead of making its own.
 *
 * @since 0.1.0
 * @category models
 */
export class Coalesced extends Schema.TaggedClass<Coalesced>()("Coalesced", {
  taskId: Schema.String,
  /** The key the calls share (a hash of the request). */
  key: Schema.String,
  /** How many callers share the call now, this one included. */
  waiters: Schema.Int
}) {}

/**
 * A task was answered from the memo: the same request was answered within the memo's
 * time-to-live, so no call was made.
 *
 * @since 0.1.0
 * @category models
 */
export class Memoized extends Schema.TaggedClass<Memoized>()("Memoized", {
  taskId: Schema.String,
  /** The key the answer is stored under (the request's). */
  key: Schema.String
}) {}

/**
 * A streamed answer failed after some text was delivered, and `model` was asked to continue from
 * the `deliveredChars` characters the reader already has.
 *
 * @since 0.1.0
 * @category models
 */
export class StreamContinued extends Schema.TaggedClass<StreamContinued>()("StreamContinued", {
  taskId: Schema.String,
  /** The model asked to continue. */
  model: Schema.String,
  deliveredChars: Schema.Int,
  /** Why the stream broke. */
  error: ErrorInfo
}) {}

/**
 * Where a run stands: counts, and the rate and time left where known (see `Progress`).
 *
 * @since 0.1.0
 * @category models
 */
export class ProgressReported extends Schema.TaggedClass<ProgressReported>()("ProgressReported", {
  /** Inputs in the run; absent when unknown (a stream). */
  total: Schema.optional(Schema.NonNegativeInt),
  /** Inputs accounted for: succeeded, failed, invalid, and skipped (answered by an earlier run). */
  done: Schema.NonNegativeInt,
  succeeded: Schema.NonNegativeInt,
  failed: Schema.NonNegativeInt,
  invalid: Schema.NonNegativeInt,
  skipped: Schema.NonNegativeInt,
  retries: Schema.NonNegativeInt,
  inFlight: Schema.NonNegativeInt,
  elapsedMillis: Schema.NonNegative,
  /** Tasks this run finished per second; absent before any time has passed. */
  perSecond: Schema.optional(Schema.NonNegative),
  /** Time left at that rate; absent while unknown. */
  etaMillis: Schema.optional(Schema.NonNegative)
}) {}

/**
 * Every event the agent publishes.
 *
 * @since 0.1.0
 * @category models
 */
export const AgentEvent = Schema.Union(
  TaskQueued,
  TaskStarted,
  RetryScheduled,
  RetryGivenUp,
  BreakerTransition,
  StoreStatus,
  BudgetWaited,
  FallbackUsed,
  HedgeStarted,
  Coalesced,
  Memoized,
  StreamContinued,
  TaskFinished,
  ProgressReported
)

/**
 * @since 0.1.0
 * @category models
 */
export type AgentEvent = typeof AgentEvent.Type

/**
 * The tag of every kind of event.
 *
 * @since 0.1.0
 * @category models
 */
export type Tag = AgentEvent["_tag"]

/**
 * The event with tag `T`.
 *
 * @since 0.1.0
 * @category models
 */
export type Of<T extends Tag> = Extract<AgentEvent, { readonly _tag: T }>

/**
 * Every tag, in the union's order.
 *
 * @since 0.1.0
 * @category models
 */
export const tags: ReadonlyArray<Tag> = [
  "TaskQueued",
  "TaskStarted",
  "RetryScheduled",
  "RetryGivenUp",
  "BreakerTransition",
  "BudgetWaited",
  "FallbackUsed",
  "HedgeStarted",
  "Coalesced",
  "Memoized",
  "StreamContinued",
  "TaskFinished",
  "ProgressReported"
]

/**
 * A refinement for one kind of event, for `Stream.filter`.
 *
 * @since 0.1.0
 * @category predicates
 */
export const is = <T extends Tag>(tag: T) => (event: AgentEvent): event is Of<T> => event._tag === tag

const json = Schema.parseJson(AgentEvent)
const encodeJson = Schema.encode(json)
const decodeJson = Schema.decodeUnknown(json)

/**
 * The event as one line of JSON (no newline), encoded with its schema.
 *
 * @since 0.1.0
 * @category encoding
 */
export const toJson = (event: AgentEvent): Effect.Effect<string, ParseResult.ParseError> => encodeJson(event)

/**
 * An event from its JSON, validated by its schema.
 *
 * @since 0.1.0
 * @category encoding
 */
export const fromJson = (text: string): Effect.Effect<AgentEvent, ParseResult.ParseError> => decodeJson(text)

/**
 * A stream of events as JSON Lines (each line ends with `\n`), for an events file.
 *
 * @since 0.1.0
 * @category encoding
 */
export const jsonLines = <E, R>(
  events: Stream.Stream<AgentEvent, E, R>
): Stream.Stream<string, E | ParseResult.ParseError, R> =>
  Stream.mapEffect(events, (event) => Effect.map(encodeJson(event), (line) => line + "\n"))
