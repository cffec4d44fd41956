import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option } from "effect"
import { TaskFailed, TaskInvalid, TaskSucceeded } from "../../src/agent/AgentTask.js"
import * as RecordSink from "../../src/cli/RecordSink.js"
import * as TestStdio from "./TestStdio.js"

const ok = (id: string) =>
  new TaskSucceeded({ id, output: `answer ${id}`, attempts: 1, model: "embedded", degraded: false, durationMs: 5 })
const okLine = (id: string) =>
  `{"id":"${id}","status":"succeeded","output":"answer ${id}","attempts":1,"model":"embedded","degraded":false,"durationMs":5}`

const withTempDir = <A, E, R>(f: (dir: string, fs: FileSystem.FileSystem) => Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    return yield* f(yield* fs.makeTempDirectoryScoped(), fs)
  }).pipe(Effect.scoped, Effect.provide(NodeContext.layer))

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

  it.effect("a file is truncated without append; parent directories are created", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const path = `${dir}/out/nested/results.jsonl`
        yield* Effect.scoped(Effect.flatMap(RecordSink.file(path, { append: false }), (sink) => sink.write(ok("old"))))
        yield* Effect.scoped(Effect.flatMap(RecordSink.file(path, { append: false }), (sink) => sink.write(ok("new"))))
        expect(yield* fs.readFileString(path)).toBe(`${okLine("new")}\n`)
      })
    ))

  it.effect("append after a line cut short by a crash: a newline first, so records never share a line", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const path = `${dir}/results.jsonl`
        const cut = okLine("b").slice(0, 30)
        yield* fs.writeFileString(path, `${okLine("a")}\n${cut}`)
        yield* Effect.scoped(Effect.flatMap(RecordSink.file(path, { append: true }), (sink) => sink.write(ok("c"))))
        expect(yield* fs.readFileString(path)).toBe(`${okLine("a")}\n${cut}\n${okLine("c")}\n`)
        // a file that ends with a newline gets none added
        yield* Effect.scoped(Effect.flatMap(RecordSink.file(path, { append: true }), (sink) => sink.write(ok("d"))))
        expect(yield* fs.readFileString(path)).toBe(`${okLine("a")}\n${cut}\n${okLine("c")}\n${okLine("d")}\n`)
      })
    ))

  it.effect("readResumeSet: ids of task records, lines of invalid records, unreadable lines counted", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const path = `${dir}/results.jsonl`
        yield* fs.writeFileString(
          path,
          [
            okLine("a"),
            '{"id":"b","status":"failed","error":{"_tag":"Overloaded","message":"x"},"attempts":4}',
            '{"line":7,"status":"invalid","error":{"_tag":"InvalidTask","message":"line 7: ..."}}',
            "",
            '{"id":"c","status":"succ'
          ].join("\n")
        )
        const resumed = yield* RecordSink.readResumeSet(path)
        expect([...resumed.ids]).toEqual(["a", "b"])
        expect([...resumed.lines]).toEqual([7])
        expect(resumed.unreadableLines).toBe(1)
        const none = yield* RecordSink.readResumeSet(`${dir}/missing.jsonl`)
        expect({ ids: [...none.ids], lines: [...none.lines], unreadableLines: none.unreadableLines })
          .toEqual({ ids: [], lines: [], unreadableLines: 0 })
      })
    ))

  it.effect("an output path that cannot be created fails with OutputFailed naming it", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/file`, "")
        const result = yield* Effect.either(
          Effect.scoped(RecordSink.open(Option.some(`${dir}/file/results.jsonl`), { append: false }))
        ).pipe(Effect.provide(TestStdio.make().layer))
        expect(Either.isLeft(result) && result.left._tag).toBe("OutputFailed")
        expect(Either.isLeft(result) && result.left.message).toMatch(
          new RegExp(`^cannot write output "${dir}/file/results.jsonl": `)
        )
      })
    ))
})
