/**
 * One task while it runs: what every part of `AgentService` needs to know about the task it is
 * working for, and the story it tells about it.
 *
 * Why a module of its own: the attempt pipeline (`Tier`), the fallback chain, sharing, the
 * streaming path and the record a task ends with all read and update the same few things — the
 * calls the task made, the last error it met, its deadline, the window it may sleep in — and
 * each reports what happens to the task as events, metrics and span events. A `TaskRun` carries
 * them as an argument from part to part, so no fiber-local state is copied per task and no
 * closure is built for a hook that never runs; its methods are the retry policy's per-call
 * hooks (it implements `Retry.CallOptions`). A caller from outside (a durable runner, a
 * gateway) builds one per task with {@link make} and hands it to the parts.
 *
 * @since 0.1.0
 */
import { Clock, Context as EffectContext, Duration, Effect, Metric } from "effect"
import * as AgentEvent from "../events/AgentEvent.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import type * as EventBus from "../events/EventBus.js"
import type * as CircuitBreaker from "../policy/CircuitBreaker.js"
import * as Retry from "../policy/Retry.js"
import type * as TokenBudget from "../policy/TokenBudget.js"
import { sleepUntil } from "../internal/sleepUntil.js"
import type { TaskWindow } from "../internal/taskWindow.js"
import { metrics } from "./AgentMetrics.js"
import type { AgentTask } from "./AgentTask.js"
import type { BatchStop } from "./BatchStop.js"
import type { AgentError } from "./AgentService.js"
import type { Throttling } from "./Throttling.js"

/**
 * What every task of one service shares: the bus its events go to, its deadline and its stop on
 * refused credentials (one object per service, so a run holds one reference for all).
 *
 * @since 0.1.0
 * @category models
 */
export interface Context {
  readonly bus: EventBus.EventBus.Service
  readonly deadline: Duration.Duration
  /** `deadline` in milliseconds. */
  readonly deadlineMillis: number
  /** The service's stop on refused credentials, when it has one. */
  readonly stop?: BatchStop | undefined
  /** Whether a model is throttling the batch; without it, every Retry-After wait keeps the task's place. */
  readonly throttling?: Throttling | undefined
}

/**
 * One task while it runs: the calls it made and the last error it met (for its record and its
 * deadline's error), the window it sleeps in (none outside `processAll`), and the retry
 * policy's per-call hooks as its methods.
 *
 * @since 0.1.0
 * @category models
 */
export class TaskRun implements Retry.CallOptions<AgentError> {
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
    readonly context: Context,
    /** Clock time (ms) of the task's deadline. */
    readonly deadlineAt: number
  ) {}

  onRetry({ attempt, delay, error }: Retry.RetryEvent<AgentError>): Effect.Effect<void> {
    this.lastError = error
    const told = Effect.zipRight(
      Metric.increment(metrics.retries),
      emit(this.context.bus, "RetryScheduled", () =>
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
    return emit(this.context.bus, "RetryGivenUp", () =>
      new AgentEvent.RetryGivenUp({
        taskId: this.task.id,
        model: modelOf(error),
        reason,
        attempts,
        error: ErrorInfo.fromError(error)
      }, true))
  }

  /**
   * Waiting out a 429's Retry-After keeps the task's place while the model is throttling the
   * batch (see {@link Throttling}): the provider asked the batch to slow down, so no new task
   * starts meanwhile. An isolated 429's wait, and any other backoff, frees the place.
   */
  wait(delay: Duration.Duration, error: AgentError): Effect.Effect<void> {
    const window = this.window
    if (window === undefined) return Effect.sleep(delay)
    if (error._tag !== "RateLimited") return window.asleep(Effect.sleep(delay))
    const throttling = this.context.throttling
    if (throttling === undefined) return Effect.sleep(delay)
    return Effect.flatMap(Clock.currentTimeMillis, (now) => {
      throttling.refused(error.model, now)
      return throttling.throttled(error.model, now) ? Effect.sleep(delay) : window.asleep(Effect.sleep(delay))
    })
  }

  /** The hook a metered attempt calls when it waited for its budget. */
  budgetWaited(model: string): (waitedMillis: number, cost: TokenBudget.Cost) => Effect.Effect<void> {
    return (waitedMillis, cost) => {
      this.budgetWaitMs += waitedMillis
      return emit(this.context.bus, "BudgetWaited", () =>
        new AgentEvent.BudgetWaited({
          taskId: this.task.id,
          model,
          budget: "tokens",
          amount: cost.tokens ?? 0,
          waitMillis: waitedMillis
        }, true))
    }
  }

  /** The task's deadline has passed while it waited for `waitingFor`. */
  deadlineExceeded(waitingFor: string): Retry.DeadlineExceeded {
    return new Retry.DeadlineExceeded({
      deadline: this.context.deadline,
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
        ? Effect.raceFirst(wait, Effect.zipRight(sleepUntil(this.deadlineAt), expired))
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

/**
 * The context of every run of one service: its bus, its tasks' deadline, its stop and its
 * {@link Throttling}, if any.
 *
 * @since 0.1.0
 * @category constructors
 */
export const context = (
  bus: EventBus.EventBus.Service,
  deadline: Duration.DurationInput,
  stop?: BatchStop,
  throttling?: Throttling
): Context => {
  const decoded = Duration.decode(deadline)
  return { bus, deadline: decoded, deadlineMillis: Duration.toMillis(decoded), stop, throttling }
}

/**
 * A run for `task` that started at Clock time `start` (milliseconds), its deadline the
 * context's `deadline` later; `window` is the task window it may sleep in, if any.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (task: AgentTask, context: Context, start: number, window?: TaskWindow): TaskRun =>
  new TaskRun(task, window, context, start + context.deadlineMillis)

/**
 * An event on the current span (the task's own: called only when it has one).
 *
 * @internal
 */
export const spanEvent = (name: string, attributes: Record<string, unknown>): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    const span = fiber.currentSpan
    if (span?._tag === "Span") {
      const now = EffectContext.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeNanos()
      span.event(name, now, attributes)
    }
    return Effect.void
  })

/**
 * Publish the event `make` builds, if anyone wants its tag: nobody listening costs a lookup.
 *
 * @internal
 */
export const emit = <T extends AgentEvent.Tag>(
  bus: EventBus.EventBus.Service,
  tag: T,
  make: () => AgentEvent.AgentEvent
): Effect.Effect<void> => bus.wants(tag) ? bus.publish(make()) : Effect.void

/** The model an error names, when it names one (a breaker's error names its breaker). */
const modelOf = (error: AgentError): string => "model" in error ? error.model : "breaker" in error ? error.breaker : ""
