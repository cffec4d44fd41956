import { NodeContext } from "@effect/platform-node"
import { FileSystem } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, FastCheck, Layer, Option, Stream } from "effect"
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

  it.effect("issue 7.8: a line that is not UTF-8 is invalid and says so, and is not taken for a duplicate id", () =>
    Effect.gen(function*() {
      const entries = yield* Stream.runCollect(
        TaskSource.entries(Stream.make<Array<TaskSource.Line>>(
          new TaskSource.NotUtf8({ offset: 8, byte: 0xff }),
          new TaskSource.NotUtf8({ offset: 8, byte: 0xfe })
        ))
      )
      expect(Chunk.toArray(entries).map((entry) => entry._tag === "Invalid" ? entry.error.message : entry._tag)).toEqual([
        "line 1: not valid UTF-8 (byte 0xff at offset 8)",
        "line 2: not valid UTF-8 (byte 0xfe at offset 8)"
      ])
    }))

  it.effect("each run of the stream starts afresh (no ids leak between runs)", () =>
    Effect.gen(function*() {
      const entries = TaskSource.entries(Stream.make('{"id":"a","prompt":"p"}'))
      expect(Chunk.size(yield* Stream.runCollect(entries))).toBe(1)
      const again = yield* Stream.runCollect(entries)
      expect(Chunk.toArray(again).map((entry) => entry._tag)).toEqual(["Task"])
    }))

  it.scoped("reads a file once as lines (CRLF too); the total is exact once read to the end", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/tasks.jsonl`
      yield* fs.writeFileString(path, '{"id":"a","prompt":"p"}\r\n\r\n{"id":"b","prompt":"q"}\n\n')
      const input = yield* TaskSource.open(path)
      expect(yield* input.total).toEqual(Option.none())
      const entries = yield* Stream.runCollect(TaskSource.entries(input.lines))
      expect(Chunk.toArray(entries).map((entry) => entry._tag === "Task" ? `${entry.line}:${entry.task.id}` : entry._tag))
        .toEqual(["1:a", "3:b"])
      expect(yield* input.total).toEqual(Option.some({ lines: 2, estimated: false }))
    }).pipe(Effect.provide(Layer.merge(NodeContext.layer, TestStdio.make().layer))))

  it.scoped("issue 7.2: before the end, a regular file's total is estimated from its size and the bytes read", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const path = `${dir}/tasks.jsonl`
      // 4,000 lines of 100 bytes: more than one 64 KiB read
      const line = (i: number) => `{"id":"t${String(i).padStart(5, "0")}","prompt":"${"x".repeat(72)}"}`
      yield* fs.writeFileString(path, Array.from({ length: 4000 }, (_, i) => line(i)).join("\n") + "\n")
      expect(line(1).length + 1).toBe(100)
      const input = yield* TaskSource.open(path)
      const firstChunk = yield* Stream.runCollect(Stream.take(input.lines, 10))
      expect(Chunk.size(firstChunk)).toBe(10)
      const estimate = yield* input.total
      expect(Option.map(estimate, (t) => t.estimated)).toEqual(Option.some(true))
      // within 1%: the line cut by the end of the read is not counted yet
      expect(Option.map(estimate, (t) => Math.abs(t.lines - 4000) <= 40)).toEqual(Option.some(true))
    }).pipe(Effect.provide(Layer.merge(NodeContext.layer, TestStdio.make().layer))))

  it.effect("- reads stdin; its total is unknown until the end", () =>
    Effect.gen(function*() {
      const stdio = TestStdio.make({ stdin: '{"id":"s","prompt":"from stdin"}\n{oops\n' })
      yield* Effect.gen(function*() {
        const input = yield* TaskSource.open("-")
        expect(yield* input.total).toEqual(Option.none())
        const entries = yield* Stream.runCollect(TaskSource.entries(input.lines))
        expect(Chunk.toArray(entries).map((entry) => entry._tag)).toEqual(["Task", "Invalid"])
        expect(yield* input.total).toEqual(Option.some({ lines: 2, estimated: false }))
      }).pipe(Effect.scoped, Effect.provide(stdio.layer))
    }))

  it.effect("issue 17.6: stdin on a terminal is said to be read, so wiz run does not wait in silence; a pipe is not", () =>
    Effect.gen(function*() {
      const terminal = TestStdio.make({ stdin: "", stdinIsTTY: true })
      const pipe = TestStdio.make({ stdin: "" })
      for (const stdio of [terminal, pipe]) {
        yield* Effect.scoped(TaskSource.open("-")).pipe(Effect.provide(stdio.layer))
      }
      expect(terminal.stderr()).toBe(
        'wiz: reading tasks from standard input, one JSON object per line ({"id": "t1", "prompt": "..."}); ' +
          "Ctrl-D ends them. To run a file: wiz run tasks.jsonl\n"
      )
      expect(pipe.stderr()).toBe("")
    }))

  it.effect("a missing file or a directory fails with InputUnreadable naming the path, when opened", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(Effect.scoped(TaskSource.open("/no/such/dir/tasks.jsonl")))
      expect(missing.message).toBe(
        "cannot read input \"/no/such/dir/tasks.jsonl\": ENOENT: no such file or directory, open '/no/such/dir/tasks.jsonl'"
      )
      const directory = yield* Effect.flip(Effect.scoped(TaskSource.open("/")))
      expect(directory).toEqual(new TaskSource.InputUnreadable({ path: "/", reason: "is a directory" }))
    }).pipe(Effect.provide(TestStdio.make().layer)))

  describe("splitLines", () => {
    const encoder = new TextEncoder()
    const split = (chunks: ReadonlyArray<Uint8Array>) =>
      Stream.runCollect(TaskSource.splitLines(Stream.fromIterable(chunks))).pipe(Effect.map(Chunk.toArray))

    it.effect("issue 7.8: a line that is not UTF-8 says where, instead of a replacement character", () =>
      Effect.gen(function*() {
        const bytes = Uint8Array.from([...encoder.encode('{"id":"a'), 0xff, ...encoder.encode('"}\n{"id":"a'), 0xfe, ...encoder.encode('"}')])
        expect(yield* split([bytes])).toEqual([
          new TaskSource.NotUtf8({ offset: 8, byte: 0xff }),
          new TaskSource.NotUtf8({ offset: 8, byte: 0xfe })
        ])
        // overlong, surrogate and truncated sequences are refused too; real multi-byte text is kept
        expect(yield* split([Uint8Array.from([0x61, 0xc0, 0x80])])).toEqual([new TaskSource.NotUtf8({ offset: 1, byte: 0xc0 })])
        expect(yield* split([Uint8Array.from([0xed, 0xa0, 0x80])])).toEqual([new TaskSource.NotUtf8({ offset: 0, byte: 0xed })])
        expect(yield* split([Uint8Array.from([0x61, 0x62, 0xe2, 0x82])])).toEqual([new TaskSource.NotUtf8({ offset: 2, byte: 0xe2 })])
        expect(yield* split([encoder.encode("héllo €😀\r\n")])).toEqual(["héllo €😀"])
      }))

    it.effect("a byte-order mark is dropped at the start of the input only", () =>
      Effect.gen(function*() {
        expect(yield* split([Uint8Array.from([0xef, 0xbb, 0xbf, 0x61, 0x0a, 0xef, 0xbb, 0xbf, 0x62])])).toEqual(["a", "\ufeffb"])
      }))

    it.effect.prop(
      "chunk boundaries anywhere (inside a character, between \\r and \\n) give the same lines",
      [FastCheck.array(FastCheck.integer({ min: 0, max: 60 }), { maxLength: 8 })],
      ([cuts]) =>
        Effect.gen(function*() {
          const bytes = encoder.encode('{"id":"é"}\r\n\n😀 line\r\nlast €')
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
          const chunks = [0, ...points].map((from, i) => bytes.subarray(from, [...points, bytes.length][i]))
          expect(yield* split(chunks)).toEqual(['{"id":"é"}', "", "😀 line", "last €"])
        })
    )
  })
})
