/**
 * What the agent's policies did, as typed events: a retry scheduled (with its delay and
 * cause), a retry given up, a breaker transition, a fallback tier used, a hedge started, a task
 * finished. `AgentService` publishes them on its `events` stream, ready for an event bus.
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
import { Schema } from "effect"
import { ErrorInfo } from "./ErrorInfo.js"

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
 * A task ended, answered or not.
 *
 * @since 0.1.0
 * @category models
 */
export class TaskFinished extends Schema.TaggedClass<TaskFinished>()("TaskFinished", {
  taskId: Schema.String,
  status: Schema.Literal("succeeded", "failed"),
  attempts: Schema.Int,
  durationMs: Schema.Number
}) {}

/**
 * Every event the agent publishes.
 *
 * @since 0.1.0
 * @category models
 */
export const AgentEvent = Schema.Union(
  TaskStarted,
  RetryScheduled,
  RetryGivenUp,
  BreakerTransition,
  FallbackUsed,
  HedgeStarted,
  TaskFinished
)

/**
 * @since 0.1.0
 * @category models
 */
export type AgentEvent = typeof AgentEvent.Type

/**
 * A refinement for one kind of event, for `Stream.filter`.
 *
 * @since 0.1.0
 * @category predicates
 */
export const is = <Tag extends AgentEvent["_tag"]>(tag: Tag) =>
(event: AgentEvent): event is Extract<AgentEvent, { readonly _tag: Tag }> => event._tag === tag
