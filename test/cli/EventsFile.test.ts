import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option } from "effect"
import { execFileSync } from "node:child_process"
import { readFile } from "node:fs/promises"
import * as EventsFile from "../../src/cli/EventsFile.js"
import * as FileId from "../../src/cli/FileId.js"
import * as AgentEvent from "../../src/events/AgentEvent.js"
import * as TestStdio from "./TestStdio.js"

const withTempDir = <A, E, R>(
  f: (dir: string, fs: FileSystem.FileSystem) => Effect.Effect<A, E, R>,
  stdio: TestStdio.TestStdio = TestStdio.make()
) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    return yield* f(yield* fs.makeTempDirectoryScoped(), fs)
  }).pipe(Effect.scoped, Effect.provide(Layer.merge(NodeContext.layer, stdio.layer)))

const events: ReadonlyArray<AgentEvent.AgentEvent> = [
  new AgentEvent.TaskStarted({ taskId: "a" }),
  new AgentEvent.RetryScheduled({ taskId: "a", model: "embedded", attempt: 2, delayMillis: 250, error: { _tag: "Overloaded", message: "embedded: overloaded" } }),
  new AgentEvent.BreakerTransition({ breaker: "embedded", from: "Closed", to: "Open", atMillis: 1_000, untilMillis: 6_000 }),
  new AgentEvent.Coalesced({ taskId: "b", key: "k", waiters: 2 }),
  new AgentEvent.TaskFinished({ taskId: "a", status: "succeeded", attempts: 2, durationMs: 300 })
]

describe("EventsFile", () => {
  it.effect("open truncates the file (creating its directory) and each write appends one schema-encoded line per event", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const path = `${dir}/deep/er/events.jsonl`
        yield* fs.makeDirectory(`${dir}/deep/er`, { recursive: true })
        yield* fs.writeFileString(path, "an old run's events\n")
        yield* Effect.scoped(Effect.gen(function*() {
          const file = yield* EventsFile.open(path)
          yield* file.write(events.slice(0, 2))
          yield* file.write([])
          yield* file.write(events.slice(2))
          yield* file.commit
        }))
        const lines = (yield* fs.readFileString(path)).split("\n")
        expect(lines.at(-1)).toBe("")
        expect(yield* Effect.forEach(lines.slice(0, -1), AgentEvent.fromJson)).toEqual(events)
        expect(lines.slice(0, -1)).toEqual(yield* Effect.forEach(events, AgentEvent.toJson))
        // a missing directory is created
        yield* Effect.scoped(Effect.flatMap(EventsFile.open(`${dir}/new/events.jsonl`), (file) => file.write(events)))
        expect((yield* fs.readFileString(`${dir}/new/events.jsonl`)).split("\n")).toHaveLength(events.length + 1)
      })
    ))

  it.effect("a FIFO (a reader such as jq) and /dev/null are written and committed: appended to, never synced", () =>
    withTempDir((dir) =>
      Effect.gen(function*() {
        const fifo = `${dir}/events.fifo`
        execFileSync("mkfifo", [fifo])
        const read = Effect.promise(() => readFile(fifo, "utf8"))
        const write = Effect.scoped(Effect.gen(function*() {
          const file = yield* EventsFile.open(fifo)
          yield* file.write(events)
          yield* file.commit
        }))
        const [text] = yield* Effect.all([read, write], { concurrency: 2 })
        expect(yield* Effect.forEach(text.trimEnd().split("\n"), AgentEvent.fromJson)).toEqual(events)
        yield* Effect.scoped(Effect.flatMap(EventsFile.open("/dev/null"), (file) => Effect.zipRight(file.write(events), file.commit)))
      })
    ))

  it.effect("a file that cannot be created is an EventsFailed naming it", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/file`, "")
        const result = yield* Effect.either(Effect.scoped(EventsFile.open(`${dir}/file/events.jsonl`)))
        expect(Either.isLeft(result) && result.left._tag).toBe("EventsFailed")
        expect(Either.isLeft(result) && result.left.message).toMatch(new RegExp(`^cannot write events "${dir}/file/events.jsonl": `))
      })
    ))

  it.effect("check refuses the input, the output and stdout, by name or by file, and -; any other file passes", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const input = `${dir}/tasks.jsonl`
      const output = `${dir}/out.jsonl`
      yield* fs.writeFileString(input, "")
      yield* fs.writeFileString(output, "")
      yield* fs.symlink(input, `${dir}/in-link.jsonl`)
      const stdoutFile = Option.getOrThrow(yield* FileId.ofPath(output))
      const refusal = (events: string, out: Option.Option<string>, stdio = TestStdio.make()) =>
        EventsFile.check(events, input, out).pipe(
          Effect.flip,
          Effect.map((error) => error.message),
          Effect.provide(stdio.layer)
        )
      expect(yield* refusal(input, Option.some(output))).toContain(`the events file "${input}" is the input "${input}", one file`)
      expect(yield* refusal(`${dir}/in-link.jsonl`, Option.some(output))).toContain("is the input")
      expect(yield* refusal(`${dir}/./out.jsonl`, Option.some(output))).toContain(`is the output "${output}"`)
      // not created yet: the same name is the same file
      expect(yield* refusal(`${dir}/later.jsonl`, Option.some(`${dir}/sub/../later.jsonl`))).toContain("is the output")
      // records on stdout, and stdout is that file
      expect(yield* refusal(output, Option.none(), TestStdio.make({ stdoutFile }))).toContain("is standard output")
      expect(yield* refusal("-", Option.some(output))).toContain("--events needs a FILE of its own")
      yield* EventsFile.check(`${dir}/events.jsonl`, input, Option.some(output)).pipe(Effect.provide(TestStdio.make({ stdoutFile }).layer))
      // a device is no file: /dev/null may take both the records and the events
      yield* EventsFile.check("/dev/null", input, Option.some("/dev/null")).pipe(Effect.provide(TestStdio.make().layer))
    }).pipe(Effect.scoped, Effect.provide(NodeContext.layer)))
})
