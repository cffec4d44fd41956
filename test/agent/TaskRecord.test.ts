import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, FiberId, TestClock } from "effect"
import * as TaskRecord from "../../src/agent/TaskRecord.js"
import * as AiModel from "../../src/model/AiModel.js"
import * as Fallback from "../../src/policy/Fallback.js"
import { parts, task } from "./parts.js"

const completion = (model: string) =>
  new AiModel.Completion({ text: "answer", finishReason: "stop", usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 1 }), model })

describe("TaskRecord", () => {
  it.scoped("a task interrupted ends without a record", () =>
    Effect.gen(function*() {
      const { runOf } = yield* parts()
      const exit = yield* Effect.exit(TaskRecord.finish(yield* runOf(task("t")), 0, Exit.interrupt(FiberId.none)))
      expect(Exit.isInterrupted(exit)).toBe(true)
    }))

  it.scoped("a defect gives the task a Defect record instead of ending the batch", () =>
    Effect.gen(function*() {
      const { runOf } = yield* parts()
      const failed = yield* Effect.flip(TaskRecord.finish(yield* runOf(task("t")), 0, Exit.die(new TypeError("boom"))))
      expect(failed).toMatchObject({ _tag: "TaskFailed", id: "t", status: "failed", error: { _tag: "Defect", message: "TypeError: boom" } })
    }))

  it.scoped("a success names the model that answered, whether a later tier did, and its duration on the Clock", () =>
    Effect.gen(function*() {
      const { runOf } = yield* parts()
      const run = yield* runOf(task("t"))
      run.attempts = 2
      yield* TestClock.adjust(250)
      const alone = yield* TaskRecord.finish(run, 0, Exit.succeed(completion("m")))
      expect(alone).toMatchObject({ id: "t", output: "answer", model: "m", degraded: false, attempts: 2, durationMs: 250 })
      const degraded = yield* TaskRecord.finish(
        run,
        50,
        Exit.succeed<Fallback.Answered<AiModel.Completion, never>>({ value: completion("b"), tier: "b", index: 1, degraded: true, failures: [] }),
        { exit: Exit.succeed(completion("b")), attempts: 0, memoized: true }
      )
      expect(degraded).toMatchObject({ model: "b", degraded: true, attempts: 0, memoized: true, durationMs: 200 })
    }))
})
