/**
 * The record a task ends with: `TaskSucceeded` (its answer, the model that gave it, whether a
 * fallback tier did, the calls it made) or `TaskFailed` (the error that ended it, as
 * `ErrorInfo`, a defect included), with its duration and what it shared or waited for; and,
 * as it ends, its metrics and its `TaskFinished` event. Interrupting a task ends it without a
 * record: nobody is left to read one.
 *
 * Why a module of its own: the record is the contract with everyone downstream (the CLI's
 * output file, a durable store, a gateway's response), so its shape is decided in one place,
 * whoever ran the task.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Effect, Exit, FiberRef, Option } from "effect"
import * as AgentEvent from "../events/AgentEvent.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import * as AiModel from "../model/AiModel.js"
import { unsafeConstruct } from "../internal/unsafeConstruct.js"
import { failedTasks, metrics, succeededTasks } from "./AgentMetrics.js"
import { TaskFailed, TaskSucceeded } from "./AgentTask.js"
import type { BatchStopped } from "./BatchStop.js"
import { type Answer, type AnswerError, completionOf } from "./FallbackChain.js"
import type { Sharing } from "./Sharing.js"
import type { TaskRun } from "./TaskRun.js"

/**
 * The record of the task `run` worked for, which started at Clock time `start` (ms) and ended
 * with `outcome` (got as `shared` says, when it went through sharing); it also updates the
 * task metrics and publishes `TaskFinished`. Fails with the `TaskFailed` record.
 *
 * @since 0.1.0
 * @category constructors
 */
export const finish = (
  run: TaskRun,
  start: number,
  outcome: Exit.Exit<Answer, AnswerError | BatchStopped>,
  shared?: Sharing
): Effect.Effect<TaskSucceeded, TaskFailed> =>
  // Interrupting the caller ends the task without a record; anything else gives one.
  Exit.isFailure(outcome) && Cause.isInterruptedOnly(outcome.cause)
    ? Effect.interrupt
    : Effect.withFiberRuntime((fiber) => {
      run.context.stop?.observe(outcome)
      const durationMs = Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeMillis() - start
      const labels = fiber.getFiberRef(FiberRef.currentMetricLabels)
      const succeeded = Exit.isSuccess(outcome)
      metrics.taskDuration.unsafeUpdate(durationMs, labels)
      metrics.tasks.unsafeUpdate(1, labels)
      ;(succeeded ? succeededTasks : failedTasks).unsafeUpdate(1, labels)
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
        const completion = completionOf(answered)
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
      const bus = run.context.bus
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
 * The error of a failed task: its typed error, or a defect (a bug in a model adapter, say) as
 * `Defect`, so one task's defect gives that task a record instead of ending the whole batch.
 *
 * @since 0.1.0
 * @category constructors
 */
export const causeInfo = (cause: Cause.Cause<AnswerError | BatchStopped>): ErrorInfo.ErrorInfo =>
  Option.match(Cause.failureOption(cause), {
    onSome: ErrorInfo.fromError,
    onNone: () => {
      const defect = Cause.squash(cause)
      return { _tag: "Defect", message: defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect) }
    }
  })
