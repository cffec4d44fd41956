/**
 * One model tier: how a task asks one model for an answer. Per attempt
 * `breaker → token budget → permit → time limit → model`; around the attempt, the model's
 * hedge; around that, the tier's retry policy. A concurrency permit is held only while a
 * request is on the wire, never through a backoff or a wait for the budget; an open breaker
 * fails an attempt at once with a `retryAfter`, which the last tier waits out (asleep, within
 * the task's deadline) and an earlier tier hands to the next one.
 *
 * Why a module of its own: this is the unit every front door calls — `AgentService.process`
 * through the fallback chain, a durable runner inside an activity, a gateway per request — and
 * the one place that says in what order the policies wrap an attempt. Its state (breakers,
 * budgets, permits) comes from {@link Policies}; its story goes on the task's {@link TaskRun}.
 *
 * @example
 * ```ts
 * import { Clock, Effect } from "effect"
 * import { AgentService, AgentTask, AiModel, EmbeddedModel, EventBus } from "wiz-effect"
 * import * as Policies from "wiz-effect/agent/Policies"
 * import * as TaskRun from "wiz-effect/agent/TaskRun"
 * import * as Tier from "wiz-effect/agent/Tier"
 *
 * const program = Effect.gen(function*() {
 *   const model = yield* AiModel.AiModel
 *   const bus = yield* EventBus.make()
 *   const policies = yield* Policies.make({ concurrency: 4 }, bus)
 *   const ask = yield* Tier.make(policies, model, true)
 *   const task = new AgentTask.AgentTask({ id: "t1", prompt: "Summarise: Effect is a TypeScript library." })
 *   const run = TaskRun.make(task, TaskRun.context(bus, AgentService.defaults.deadline), yield* Clock.currentTimeMillis)
 *   return yield* ask(new AiModel.CompletionRequest({ prompt: task.prompt, maxTokens: 64 }), run)
 * }).pipe(Effect.scoped, Effect.provide(EmbeddedModel.layer({ seed: 1 })))
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, FiberRef, Metric } from "effect"
import * as AgentEvent from "../events/AgentEvent.js"
import { durationUntil } from "../internal/sleepUntil.js"
import * as AiModel from "../model/AiModel.js"
import type * as Retry from "../policy/Retry.js"
import { metrics } from "./AgentMetrics.js"
import type { AgentError } from "./AgentService.js"
import type { Policies } from "./Policies.js"
import { emit, type TaskRun } from "./TaskRun.js"

/**
 * A tier: answer `request` for the task `run` works for, or fail with the error that ended it.
 *
 * @since 0.1.0
 * @category models
 */
export type Tier = (request: AiModel.CompletionRequest, run: TaskRun) => Effect.Effect<AiModel.Completion, AgentError>

/**
 * The tier of `model`. `last`: whether it is the last model tier (it waits on its open
 * circuit instead of failing, and retries what an earlier tier would hand on).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(policies: Policies, model: AiModel.AiModel.Service, last: boolean) {
  const { throttling, timeout, timeoutMillis, timer, withPermit } = policies
  const hedge = yield* policies.hedgeFor()
  const retryPolicy = policies.retryFor(last)
  const breaker = yield* policies.breakerFor(model.name)
  const budget = yield* policies.budgetFor(model.name)
  const modelTimeout = () => new AiModel.ModelTimeout({ model: model.name, timeout }, true)
  // The retry policy's hooks see every failed attempt; without one, the call notes its own.
  const remember = retryPolicy !== undefined
    ? undefined
    : (run: TaskRun) => (error: AiModel.ModelError | Retry.DeadlineExceeded) => {
      run.lastError = error
      return Effect.fail(error)
    }

  const tier: Tier = (request, run) => {
    // The call's time limit is its timeout, or what is left of the task's deadline if less.
    const call = Effect.withFiberRuntime<AiModel.Completion, AiModel.ModelError | Retry.DeadlineExceeded>((fiber) => {
      const now = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis()
      run.attempts++
      throttling.attempted(model.name, now)
      metrics.attempts.unsafeUpdate(1, fiber.getFiberRef(FiberRef.currentMetricLabels))
      if (run.traced) {
        const span = fiber.currentSpan
        if (span?._tag === "Span") span.event("attempt", BigInt(Math.round(now * 1_000_000)), { model: model.name, attempt: run.attempts })
      }
      const left = run.deadlineAt - now
      const limited = left < timeoutMillis
        ? timer.within(model.generate(request), left > 0 ? durationUntil(now, run.deadlineAt) : Duration.zero, () =>
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
        emit(run.context.bus, "HedgeStarted", () =>
          new AgentEvent.HedgeStarted({ taskId: run.task.id, model: model.name, hedge: n, afterMillis: Duration.toMillis(after) }, true))
      ))
    return retryPolicy === undefined ? hedged : retryPolicy.apply(hedged, run)
  }
  return tier
})
