import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Match, Schema } from "effect"
import * as AgentTask from "../../src/agent/AgentTask.js"
import * as ErrorInfo from "../../src/events/ErrorInfo.js"

const invalid = (text: string, line: number) => {
  const parsed = AgentTask.decodeLine(text, line)
  if (Either.isRight(parsed)) throw new Error(`expected line ${line} to be invalid`)
  return parsed.left
}

describe("AgentTask", () => {
  it("decodes a valid line, ignoring fields it does not know", () => {
    const parsed = AgentTask.decodeLine(`{"id":"t1","prompt":"Summarise: x","maxTokens":32,"owner":"ops"}`, 1)
    expect(parsed).toStrictEqual(Either.right(new AgentTask.AgentTask({ id: "t1", prompt: "Summarise: x", maxTokens: 32 })))
  })

  it("seed bug 1: a line that is not JSON is a typed error naming the line, not a null", () => {
    const error = invalid(`{"id": "t1", "prompt": `, 7)
    expect(error._tag).toBe("InvalidTask")
    expect(error.line).toBe(7)
    expect(error.message).toMatch(/^line 7: not valid JSON \(/)
  })

  it("names the wrong-typed field once, with the value it got", () => {
    expect(invalid(`{"id":"t1","prompt":"p","maxTokens":"ten"}`, 3).message).toBe(
      `line 3: maxTokens: Expected number, actual "ten"`
    )
    expect(invalid(`{"id":"t1","prompt":"p","maxTokens":2.5}`, 4).message).toBe(
      "line 4: maxTokens: Expected an integer, actual 2.5"
    )
    expect(invalid(`{"id":"t1","prompt":"p","maxTokens":0}`, 5).message).toBe(
      "line 5: maxTokens: Expected a positive number, actual 0"
    )
  })

  it("names every missing or empty field", () => {
    expect(invalid(`{"prompt":"p"}`, 2).message).toBe(`line 2: id: is missing`)
    expect(invalid(`{"id":"","prompt":""}`, 9).message).toBe(
      "line 9: id: id must not be empty; prompt: prompt must not be empty"
    )
    expect(invalid(`42`, 1).message).toBe(`line 1: expected an object like {"id": "...", "prompt": "..."}, got 42`)
    expect(invalid(`["t1","p"]`, 2).message).toBe(`line 2: expected an object like {"id": "...", "prompt": "..."}, got ["t1","p"]`)
  })

  it("encodes each record as the CLI contract says, a failed one without its error tag", () => {
    const failed = new AgentTask.TaskFailed({
      id: "t2",
      error: { _tag: "InvalidRequest", message: "m: invalid request: too long" },
      attempts: 1,
      durationMs: 3
    })
    expect(AgentTask.encodeRecord(failed)).toStrictEqual({
      id: "t2",
      status: "failed",
      error: { _tag: "InvalidRequest", message: "m: invalid request: too long" },
      attempts: 1,
      durationMs: 3
    })
    const succeeded = new AgentTask.TaskSucceeded({
      id: "t1",
      output: "answer",
      attempts: 2,
      model: "embedded",
      degraded: false,
      durationMs: 120
    })
    expect(AgentTask.encodeRecord(succeeded)).toStrictEqual({
      id: "t1",
      status: "succeeded",
      output: "answer",
      attempts: 2,
      model: "embedded",
      degraded: false,
      durationMs: 120
    })
    const line = new AgentTask.TaskInvalid({ line: 4, error: ErrorInfo.fromError(invalid("nope", 4)) })
    expect(AgentTask.encodeRecord(line)).toStrictEqual({
      line: 4,
      status: "invalid",
      error: { _tag: "InvalidTask", message: line.error.message }
    })
  })

  it.effect("both TaskResult variants carry a _tag, so Match.tag and Effect.catchTag just work", () =>
    Effect.gen(function*() {
      const succeeded = new AgentTask.TaskSucceeded({
        id: "a", output: "x", attempts: 1, model: "m", degraded: false, durationMs: 1
      })
      const failed = new AgentTask.TaskFailed({
        id: "b", error: { _tag: "Overloaded", message: "m: overloaded" }, attempts: 4, durationMs: 9
      })
      const describe = Match.type<AgentTask.TaskResult>().pipe(
        Match.tag("TaskSucceeded", (r) => `ok ${r.id}`),
        Match.tag("TaskFailed", (r) => `failed ${r.id}`),
        Match.exhaustive
      )
      expect([succeeded, failed].map(describe)).toStrictEqual(["ok a", "failed b"])
      const caught = yield* Effect.fail(failed).pipe(Effect.catchTag("TaskFailed", (r) => Effect.succeed(r.attempts)))
      expect(caught).toBe(4)
      const decoded = Schema.decodeUnknownSync(AgentTask.TaskResult)(Schema.encodeSync(AgentTask.TaskResult)(succeeded))
      expect(decoded).toStrictEqual(succeeded)
    }))
})
