/**
 * A task answered as the model produces it (`AgentService.stream`), through the same policies
 * as a whole answer: each model tier a `StreamingAnswer` source, retried or handed to the next
 * tier only before its first chunk (or continued after a break, with `continue`); the last
 * tier waits on its open circuit within the task's deadline. An attempt reserves from the
 * model's token budget and holds a permit while its stream is open (a plain one under an
 * adaptive limit: a stream's open time is no latency to learn from); the reservation settles
 * with the usage of the final chunk, noted as chunks pass, with no effect per chunk.
 *
 * Why a module of its own: a gateway serves each streamed request through exactly this path,
 * and it shares nothing with the whole-answer path but the policies and the fallback chain it
 * takes from {@link Policies} and {@link FallbackChain}.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Effect, Exit, Metric, Option, Stream } from "effect"
import type { Array as Arr, Chunk, Scope } from "effect"
import * as AgentEvent from "../events/AgentEvent.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import * as AiModel from "../model/AiModel.js"
import type * as CircuitBreaker from "../policy/CircuitBreaker.js"
import * as TokenBudget from "../policy/TokenBudget.js"
import * as StreamingAnswer from "../stream/StreamingAnswer.js"
import type { StoreUnavailable } from "../store/SharedStore.js"
import { metrics } from "./AgentMetrics.js"
import { type AgentTask, requestOf } from "./AgentTask.js"
import type { AgentError, Options, StreamError, StreamOptions } from "./AgentService.js"
import type { FallbackChain } from "./FallbackChain.js"
import type { Policies } from "./Policies.js"
import * as TaskRun from "./TaskRun.js"

/**
 * An error after the reader got text, as the break it is: `IncompleteStream` with the text
 * delivered and the error that broke it (an `IncompleteStream` already is one).
 */
const broken = (error: StreamError, delivered: string, model: string): StreamError =>
  error._tag === "IncompleteStream" ? error : new AiModel.IncompleteStream({
    model,
    partial: delivered,
    reason: error.message,
    cause: ErrorInfo.fromError(error)
  })

/**
 * One answer's pull: its next chunks, `None` at its end, `Some(error)` when it broke.
 *
 * @since 0.1.0
 * @category models
 */
export type AnswerPull = Effect.Effect<Chunk.Chunk<AiModel.CompletionChunk>, Option.Option<StreamError>>

/**
 * The streaming path of one service: `stream(task)`, and `pull(task)` beneath it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(
  policies: Policies,
  chain: FallbackChain,
  context: TaskRun.Context,
  options: {
    readonly maxTokens: number
    readonly stream?: Options["stream"]
  }
) {
  const { bus } = context
  const streamOptions = options.stream ?? {}
  const { models, fallThrough, staticAnswer } = chain
  const last = models.length - 1
  const breakers = new Map<string, CircuitBreaker.CircuitBreaker>()
  const budgets = new Map<string, TokenBudget.TokenBudget<StoreUnavailable>>()
  for (const model of models) {
    const breaker = yield* policies.breakerFor(model.name)
    if (breaker !== undefined) breakers.set(model.name, breaker)
    const budget = yield* policies.budgetFor(model.name)
    if (budget !== undefined) budgets.set(model.name, budget)
  }

  /**
   * A source whose attempt holds a permit while its stream is open, after reserving from the
   * model's token budget; the reservation settles with the usage of the final chunk, or is
   * kept whole when the stream ends without one.
   */
  const permitted = (request: AiModel.CompletionRequest) => (source: StreamingAnswer.Source): StreamingAnswer.Source => {
    const budget = budgets.get(source.name)
    if (budget === undefined) {
      return { ...source, stream: (delivered) => Stream.unwrapScoped(Effect.as(policies.takePermit, source.stream(delivered))) }
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
            // A shared budget's store that failed under `onStoreError: "fail"` leaves the model
            // unreachable for this call.
            Effect.catchTags(budget.reserve(cost), {
              BudgetExceeded: (exceeded) => Effect.fail(new AiModel.InvalidRequest({ model: source.name, reason: exceeded.message })),
              StoreUnavailable: (failed) => Effect.fail(new AiModel.Unavailable({ model: source.name, reason: failed.message }))
            }),
            (held) =>
              Effect.zipRight(
                held.settle(usage === undefined ? held.cost : TokenBudget.usageCost(usage)),
                report === undefined ? Effect.void : budget.adopt(report)
              )
          )
          yield* policies.takePermit
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

  /** The sources of one task: each model tier, then the static answer if there is one. */
  const sourcesOf = (task: AgentTask, request: AiModel.CompletionRequest): Arr.NonEmptyArray<StreamingAnswer.Source> => {
    const source = (model: AiModel.AiModel.Service) => permitted(request)(StreamingAnswer.fromModel(model, request))
    const sources: Arr.NonEmptyArray<StreamingAnswer.Source> = [source(models[0]), ...models.slice(1).map(source)]
    if (staticAnswer !== undefined) {
      const text = staticAnswer(task)
      const usage = new AiModel.Usage({ promptTokens: 0, completionTokens: 0 })
      sources.push({
        name: "static",
        canContinue: false,
        stream: () => Stream.make(new AiModel.CompletionChunk({ delta: text, finishReason: "stop", usage }, true))
      })
    }
    return sources
  }

  // One answer maker for every task, so its timers (the first chunk's, the deadline's) are
  // shared: made per task, each stream started a timer fiber of its own for each.
  const answer = StreamingAnswer.makePull<AiModel.ModelError, never, AgentError, never>({
    firstChunk: streamOptions.firstChunk ?? policies.timeout,
    // the task's deadline bounds the whole answer, first byte to last (issue 18.2)
    deadline: context.deadline,
    ...(streamOptions.betweenChunks === undefined ? {} : { betweenChunks: streamOptions.betweenChunks }),
    ...(streamOptions.continue === undefined ? {} : { continue: streamOptions.continue }),
    fallThrough
  })

  /**
   * One task's answer as a pull in the caller's scope: what `stream` runs, and what a reader
   * that pulls itself takes without a channel over the stream. Its events and its errors after
   * the first text (`broken`) are the pull's own, with no stream stage per step.
   */
  const pull = (task: AgentTask, reader: StreamOptions = {}): Effect.Effect<AnswerPull, never, Scope.Scope> =>
    Effect.flatMap(Clock.currentTimeMillis, (start) => {
      const run = TaskRun.make(task, context, start)
      const { onAnswering } = reader
      const request = requestOf(task, options.maxTokens)
      // The text the reader has and the tier it came from, so a break after it reaches the
      // reader as one (issue 17.5).
      let delivered = ""
      let from = models[0].name
      let ended = false
      const finished = (status: "succeeded" | "failed") => {
        ended = true
        return Effect.flatMap(Clock.currentTimeMillis, (now) =>
          TaskRun.emit(bus, "TaskFinished", () =>
            new AgentEvent.TaskFinished({ taskId: task.id, status, attempts: run.attempts, durationMs: now - start }, true)))
      }
      const opened = answer(sourcesOf(task, request), {
        policy: (started, source) => {
          const breaker = breakers.get(source.name)
          const index = models.findIndex((model) => model.name === source.name)
          const guarded = breaker === undefined
            ? started
            : index === last
            ? breaker.executeWaiting(started, (wait, refused) => run.waitOnCircuit(wait, refused))
            : breaker.execute(started)
          const retryPolicy = policies.retryFor(index === last)
          return retryPolicy === undefined || index < 0 ? guarded : retryPolicy.apply(guarded, run)
        },
        onStarted: ({ failures, index, source }) => {
          from = source
          const told = onAnswering === undefined ? Effect.void : onAnswering(source)
          if (index === 0) return told
          return Effect.zipRight(
            told,
            Effect.zipRight(
              Metric.increment(metrics.fallbacks),
              TaskRun.emit(bus, "FallbackUsed", () =>
                new AgentEvent.FallbackUsed({
                  taskId: task.id,
                  tier: source,
                  failures: failures.map(({ error, tier }) => ({ tier, error: ErrorInfo.fromError(error) }))
                }, true))
            )
          )
        },
        onContinued: ({ deliveredChars, error, source }) =>
          TaskRun.emit(bus, "StreamContinued", () =>
            new AgentEvent.StreamContinued({ taskId: task.id, model: source, deliveredChars, error: ErrorInfo.fromError(error) }, true))
      })
      const started = TaskRun.emit(bus, "TaskStarted", () => new AgentEvent.TaskStarted({ taskId: task.id }, true))
      // TaskFinished when the answer ends, or when its scope closes before (unless interrupted)
      const finalizer = Effect.addFinalizer((exit) =>
        ended || (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause))
          ? Effect.void
          : finished(Exit.isSuccess(exit) ? "succeeded" : "failed")
      )
      return Effect.zipRight(
        Effect.zipRight(started, finalizer),
        Effect.map(opened, (inner): AnswerPull =>
          Effect.matchEffect(inner, {
            onSuccess: (chunks) => {
              for (const chunk of chunks) delivered += chunk.delta
              return Effect.succeed(chunks)
            },
            onFailure: (error) =>
              Option.isNone(error)
                ? Effect.zipRight(finished("succeeded"), Effect.fail(error))
                : Effect.zipRight(
                  finished("failed"),
                  Effect.fail(Option.some(delivered === "" ? error.value : broken(error.value, delivered, from)))
                )
          }))
      )
    })

  return {
    pull,
    stream: (task: AgentTask, reader?: StreamOptions): Stream.Stream<AiModel.CompletionChunk, StreamError> =>
      Stream.fromPull(pull(task, reader))
  }
})
