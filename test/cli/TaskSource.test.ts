import { NodeContext } from "@effect/platform-node"
import { FileSystem } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Option, Stream } from "effect"
import * as TaskSource from "../../src/cli/TaskSource.js"
import * as TestStdio from "./TestStdio.js"

const collect = (lines: ReadonlyArray<string>, resume?: TaskSource.ResumeSet) =>
  Stream.runCollect(TaskSource.entries(Stream.fromIterable(lines), resume)).pipe(
    Effect.map((chunk) =>
      Chunk.toArray(chunk).map((entry) =>
        TaskSource.Entry.$match(entry, {
          Task: ({ line, task }) => `task ${line} ${task.id}`,
          Invalid: ({ error }) => `invalid ${error.line}: ${error.message}`,
          Resumed: ({ line }) => `resumed ${line}`
        })
      )
    )
  )

const input = [
  '{"id":"a","prompt":"Summarise this."}',
  "",
  '{"id":"b","prompt":"Classify this.","maxTokens":16}',
  "{not json",
  '{"id":"c","prompt":42}',
  '{"prompt":"no id"}',
  "   ",
  '{"id":"a","prompt":"again"}',
  '{"id":"d","prompt":"Draft a reply.","extra":true}'
]

describe("TaskSource", () => {
  it.effect("numbers lines (blank ones too), skips blanks, says what is wrong with each bad line", () =>
    Effect.gen(function*() {
      expect(yield* collect(input)).toEqual([
        "task 1 a",
        "task 3 b",
        // the parser's own words vary by Node.js version
        expect.stringMatching(/^invalid 4: line 4: not valid JSON \(Expected property name or '\}' in JSON at position 1/),
        "invalid 5: line 5: prompt: Expected string, actual 42",
        "invalid 6: line 6: id: is missing",
        'invalid 8: line 8: duplicate id "a" (first on line 1)',
        "task 9 d"
      ])
    }))

  it.effect("an id first seen on an invalid line is not a duplicate later; a duplicate of a duplicate names the first valid line", () =>
    Effect.gen(function*() {
      expect(
        yield* collect([
          '{"id":"x","prompt":""}',
          '{"id":"x","prompt":"ok"}',
          '{"id":"x","prompt":"dup"}',
          '{"id":"x","prompt":"dup again"}'
        ])
      ).toEqual([
        "invalid 1: line 1: prompt: prompt must not be empty",
        "task 2 x",
        'invalid 3: line 3: duplicate id "x" (first on line 2)',
        'invalid 4: line 4: duplicate id "x" (first on line 2)'
      ])
    }))

  it.effect("resume: ids and invalid lines already recorded become Resumed; duplicates still detected", () =>
    Effect.gen(function*() {
      const resume: TaskSource.ResumeSet = { ids: new Set(["a", "d"]), lines: new Set([4, 8]) }
      expect(yield* collect(input, resume)).toEqual([
        "resumed 1",
        "task 3 b",
        "resumed 4",
        "invalid 5: line 5: prompt: Expected string, actual 42",
        "invalid 6: line 6: id: is missing",
        "resumed 8",
        "resumed 9"
      ])
      // a resumed id still claims its line: a later copy is a duplicate
      expect(yield* collect(['{"id":"a","prompt":"p"}', '{"id":"a","prompt":"q"}'], { ids: new Set(["a"]), lines: new Set() }))
        .toEqual(["resumed 1", 'invalid 2: line 2: duplicate id "a" (first on line 1)'])
    }))

  it.effect("each run of the stream starts afresh (no ids leak between runs)", () =>
    Effect.gen(function*() {
      const entries = TaskSource.entries(Stream.make('{"id":"a","prompt":"p"}'))
      expect(Chunk.size(yield* Stream.runCollect(entries))).toBe(1)
      const again = yield* Stream.runCollect(entries)
      expect(Chunk.toArray(again).map((entry) => entry._tag)).toEqual(["Task"])
    }))

  it.scoped("reads a file as lines (CRLF too) and counts its non-blank lines", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/tasks.jsonl`
      yield* fs.writeFileString(path, '{"id":"a","prompt":"p"}\r\n\r\n{"id":"b","prompt":"q"}\n\n')
      expect(yield* TaskSource.count(path)).toBe(2)
      const entries = yield* Stream.runCollect(TaskSource.read(path))
      expect(Chunk.toArray(entries).map((entry) => entry._tag === "Task" ? `${entry.line}:${entry.task.id}` : entry._tag))
        .toEqual(["1:a", "3:b"])
    }).pipe(Effect.provide(Layer.merge(NodeContext.layer, TestStdio.make().layer))))

  it.effect("- reads stdin", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: '{"id":"s","prompt":"from stdin"}\n{oops\n' })
      const entries = yield* Stream.runCollect(TaskSource.read("-")).pipe(
        Effect.provide(Layer.merge(NodeContext.layer, stdio.layer))
      )
      expect(Chunk.toArray(entries).map((entry) => entry._tag)).toEqual(["Task", "Invalid"])
    }))

  it.scoped("total: the non-blank lines of a regular file; none for stdin", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      yield* fs.writeFileString(`${dir}/tasks.jsonl`, '{"id":"a","prompt":"p"}\n\n  \n{oops\n')
      expect(yield* TaskSource.total(`${dir}/tasks.jsonl`)).toEqual(Option.some(2))
      expect(yield* TaskSource.total("-")).toEqual(Option.none())
    }).pipe(Effect.provide(Layer.merge(NodeContext.layer, TestStdio.make().layer))))

  it.effect("a missing file or a directory fails with InputUnreadable naming the path, before any read", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(TaskSource.total("/no/such/dir/tasks.jsonl"))
      expect(missing.message).toBe(
        "cannot read input \"/no/such/dir/tasks.jsonl\": NotFound: ENOENT: no such file or directory, stat '/no/such/dir/tasks.jsonl'"
      )
      const directory = yield* Effect.flip(TaskSource.total("/"))
      expect(directory).toEqual(new TaskSource.InputUnreadable({ path: "/", reason: "is a directory" }))
      // read on its own fails the stream the same way
      const streamed = yield* Effect.flip(Stream.runDrain(TaskSource.read("/no/such/dir/tasks.jsonl")))
      expect(streamed._tag).toBe("InputUnreadable")
      expect(streamed.path).toBe("/no/such/dir/tasks.jsonl")
    }).pipe(Effect.provide(Layer.merge(NodeContext.layer, TestStdio.make().layer))))
})
