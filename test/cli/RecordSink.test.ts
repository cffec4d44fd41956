import { SystemError } from "@effect/platform/Error"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Fiber, TestClock } from "effect"
import { TaskFailed, TaskInvalid, TaskSucceeded } from "../../src/agent/AgentTask.js"
import * as RecordSink from "../../src/cli/RecordSink.js"
import * as TestStdio from "./TestStdio.js"

const ok = (id: string) =>
  new TaskSucceeded({ id, output: `answer ${id}`, attempts: 1, model: "embedded", degraded: false, durationMs: 5 })
const okLine = (id: string) =>
  `{"id":"${id}","status":"succeeded","output":"answer ${id}","attempts":1,"model":"embedded","degraded":false,"durationMs":5}`

const brokenPipe = new SystemError({ module: "Stream", method: "stdout", reason: "Unknown", description: "write EPIPE" })

describe("RecordSink", () => {
  it.effect("stdout: one JSON line per record, in the contract's shape", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make()
      yield* Effect.gen(function*() {
        const sink = yield* RecordSink.stdout
        yield* sink.write(ok("a"))
        yield* sink.write(new TaskInvalid({ line: 3, error: { _tag: "InvalidTask", message: "line 3: id: is missing" } }))
        yield* sink.write(new TaskFailed({ id: "b", error: { _tag: "Overloaded", message: "embedded: overloaded" }, attempts: 4, durationMs: 9 }))
      }).pipe(Effect.provide(stdio.layer))
      const lines = stdio.stdout().split("\n")
      expect(lines[0]).toBe(okLine("a"))
      expect(lines[1]).toBe('{"line":3,"status":"invalid","error":{"_tag":"InvalidTask","message":"line 3: id: is missing"}}')
      expect(JSON.parse(lines[2]!)).toMatchObject({ id: "b", status: "failed", error: { _tag: "Overloaded" }, attempts: 4 })
      expect(lines[3]).toBe("")
      expect(lines.length).toBe(4)
    }))

  it.effect("issue 7.5: a failed write fails with OutputFailed naming stdout and the reason", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ failStdout: { after: 1, error: brokenPipe } })
      const result = yield* Effect.gen(function*() {
        const sink = yield* RecordSink.stdout
        yield* sink.write(ok("a"))
        return yield* Effect.either(sink.write(ok("b")))
      }).pipe(Effect.provide(stdio.layer))
      expect(stdio.stdout()).toBe(`${okLine("a")}\n`)
      expect(Either.isLeft(result) && result.left.message).toBe("cannot write output on stdout: Unknown: write EPIPE")
    }))

  it.effect("issue 7.5: a stdout closed at start-up fails before anything is written", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(RecordSink.stdout).pipe(Effect.provide(TestStdio.make({ stdoutClosed: true }).layer))
      expect(error.message).toMatch(/^cannot write output on stdout: standard output is closed, so every record would be lost/)
    }))

  it.effect("a write is not cut short by interruption: the record lands whole", () =>
    Effect.gen(function*() {
      const written: Array<string> = []
      const sink = yield* RecordSink.make("x", (text) => Effect.andThen(Effect.sleep("1 millis"), () => void written.push(text)))
      const fiber = yield* Effect.fork(sink.write(ok("a")))
      yield* Effect.yieldNow()
      const interrupting = yield* Effect.fork(Fiber.interrupt(fiber))
      yield* Effect.yieldNow()
      expect(written).toEqual([])
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(interrupting)
      expect(written).toEqual([`${okLine("a")}\n`])
    }))
})
