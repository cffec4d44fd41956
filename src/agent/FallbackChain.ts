/**
 * The tiers a task's answer may come from, in order: the primary model, the fallback models,
 * then an optional static answer. A tier's error falls through to the next one when
 * `fallThrough` says so (by default every error but `InvalidRequest`; a `Retry-After` above the
 * retry policy's `retryAfterMax` falls through too, unless `retryAfterAboveMax: "fail"`); the
 * answer says which tier gave it and why the earlier ones did not (`Fallback.Answered`).
 *
 * Why a module of its own: the whole-answer path (`AgentService.process`) runs the chain's
 * {@link FallbackChain.answer}, and the streaming path (`AnswerStream`) runs the same models,
 * the same static answer and the same `fallThrough` as stream sources; both take them from
 * here. With a single model and no static answer there is no chain: `answer` is the primary
 * tier itself, and costs nothing more.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Metric } from "effect"
import type { Array as Arr } from "effect"
import * as AgentEvent from "../events/AgentEvent.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import * as AiModel from "../model/AiModel.js"
import * as Fallback from "../policy/Fallback.js"
import * as Retry from "../policy/Retry.js"
import { metrics } from "./AgentMetrics.js"
import type { AgentTask } from "./AgentTask.js"
import type { AgentError, Options } from "./AgentService.js"
import type { Policies } from "./Policies.js"
import { emit, spanEvent, type TaskRun } from "./TaskRun.js"
import * as Tier from "./Tier.js"

/**
 * A task's answer: the primary's own completion, or the chain's answer saying which tier gave it.
 *
 * @since 0.1.0
 * @category models
 */
export type Answer = AiModel.Completion | Fallback.Answered<AiModel.Completion, AgentError>

/**
 * The completion an answer holds, whichever tier gave it.
 *
 * @since 0.1.0
 * @category getters
 */
export const completionOf = (answer: Answer): AiModel.Completion =>
  answer instanceof AiModel.Completion ? answer : answer.value

/**
 * What can end a task's answer: the primary's error, or every tier's.
 *
 * @since 0.1.0
 * @category models
 */
export type AnswerError = AgentError | Fallback.AllTiersFailed<AgentError>

/**
 * The chain of one service.
 *
 * @since 0.1.0
 * @category models
 */
export interface FallbackChain {
  /** Every model tier in order, the primary first. */
  readonly models: Arr.NonEmptyReadonlyArray<AiModel.AiModel.Service>
  /** The static answer after the last model, if any. */
  readonly staticAnswer: ((task: AgentTask) => string) | undefined
  /** Whether a tier's error hands the task to the next tier. */
  readonly fallThrough: (error: AgentError) => boolean
  /** The answer through the chain (the primary tier alone when there is no chain). */
  readonly answer: (request: AiModel.CompletionRequest, run: TaskRun) => Effect.Effect<Answer, AnswerError>
}

/**
 * The chain of `primary` and the service's `fallback` options, each model a {@link Tier} on
 * `policies`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(
  policies: Policies,
  primary: AiModel.AiModel.Service,
  options: Pick<Options, "fallback" | "retry">
) {
  const fallback = options.fallback
  const extraModels = fallback?.models ?? []
  const models: Arr.NonEmptyReadonlyArray<AiModel.AiModel.Service> = [primary, ...extraModels]
  const tiers = yield* Effect.forEach(models, (model, i) => Tier.make(policies, model, i === models.length - 1))
  const primaryTier = tiers[0]!
  const retryAfterMax = Duration.decode(
    (options.retry === false ? undefined : options.retry?.retryAfterMax) ?? Retry.defaults.retryAfterMax
  )
  const mayFallThrough = fallback?.fallThrough ?? Fallback.defaults.fallThrough
  const fallThrough = fallback?.retryAfterAboveMax === "fail"
    ? (error: AgentError) =>
      mayFallThrough(error) &&
      !("retryAfter" in error && error.retryAfter !== undefined && Duration.greaterThan(error.retryAfter, retryAfterMax))
    : mayFallThrough
  const staticAnswer = fallback?.staticAnswer

  /** The answer through the fallback chain, saying whether a later tier gave it. */
  const answerDegraded = (request: AiModel.CompletionRequest, run: TaskRun) => {
    const staticTier = staticAnswer === undefined ? [] : [
      Fallback.fixed(
        "static",
        new AiModel.Completion({
          text: staticAnswer(run.task),
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
          ...extraModels.map((model, i) => Fallback.tier(model.name, tiers[i + 1]!(request, run))),
          ...staticTier
        ],
        { fallThrough }
      ),
      (answered) => answered.degraded ? fellBack(run, answered) : Effect.void
    )
  }

  const chained = fallback !== undefined && (extraModels.length > 0 || staticAnswer !== undefined)
  const chain: FallbackChain = { models, staticAnswer, fallThrough, answer: chained ? answerDegraded : primaryTier }
  return chain
})

/** A later tier answered: a span event, the metric and `FallbackUsed`. */
const fellBack = (run: TaskRun, answered: Fallback.Answered<AiModel.Completion, AgentError>): Effect.Effect<void> =>
  Effect.zipRight(
    run.traced ? spanEvent("fallback", { tier: answered.tier, failures: answered.failures.length }) : Effect.void,
    Effect.zipRight(
      Metric.increment(metrics.fallbacks),
      emit(run.context.bus, "FallbackUsed", () =>
        new AgentEvent.FallbackUsed({
          taskId: run.task.id,
          tier: answered.tier,
          failures: answered.failures.map(({ error, tier }) => ({ tier, error: ErrorInfo.fromError(error) }))
        }, true))
    )
  )
