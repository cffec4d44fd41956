import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit, Layer, Option, Scope } from "effect"
import { execFileSync } from "node:child_process"
import { link, readFile, symlink } from "node:fs/promises"
import { TaskFailed, TaskSucceeded } from "../../src/agent/AgentTask.js"
import * as FileId from "../../src/cli/FileId.js"
import * as OutputFile from "../../src/cli/OutputFile.js"
import * as TestStdio from "./TestStdio.js"

const ok = (id: string) =>
  new TaskSucceeded({ id, output: `answer ${id}`, attempts: 1, model: "embedded", degraded: false, durationMs: 5 })
const okLine = (id: string) =>
  `{"id":"${id}","status":"succeeded","output":"answer ${id}","attempts":1,"model":"embedded","degraded":false,"durationMs":5}`
const failedLine = (id: string) =>
  `{"id":"${id}","status":"failed","error":{"_tag":"Overloaded","message":"embedded: overloaded"},"attempts":4,"durationMs":9}`
const invalidLine = (line: number) =>
  `{"line":${line},"status":"invalid","error":{"_tag":"InvalidTask","message":"line ${line}: not valid JSON"}}`
const failed = (id: string) =>
  new TaskFailed({ id, error: { _tag: "Overloaded", message: "again" }, attempts: 2, durationMs: 3 })

const withTempDir = <A, E, R>(f: (dir: string, fs: FileSystem.FileSystem) => Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    return yield* f(yield* fs.makeTempDirectoryScoped(), fs)
  }).pipe(Effect.scoped, Effect.provide(Layer.merge(NodeContext.layer, TestStdio.make().layer)))

describe("OutputFile", () => {
  describe("scan", () => {
    it.effect("ids of task records (and which failed), lines of invalid records; a missing file records nothing", () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          yield* fs.writeFileString(`${dir}/out.jsonl`, [okLine("a"), failedLine("b"), invalidLine(7), "", okLine("c")].join("\n") + "\n")
          const existing = yield* OutputFile.scan(`${dir}/out.jsonl`)
          expect([...existing.ids]).toEqual(["a", "b", "c"])
          expect([...existing.failed]).toEqual(["b"])
          expect([...existing.lines]).toEqual([7])
          expect(existing.torn).toEqual(Option.none())
          expect(yield* OutputFile.scan(`${dir}/missing.jsonl`)).toEqual(OutputFile.none)
        })
      ))

    it.effect("issue 7.3: an unparsable last line without a newline is a torn record, to be cut off", () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          const kept = `${okLine("a")}\n${okLine("b")}\n`
          yield* fs.writeFileString(`${dir}/out.jsonl`, kept + okLine("c").slice(0, 30))
          const existing = yield* OutputFile.scan(`${dir}/out.jsonl`)
          expect(existing.torn).toEqual(Option.some({ line: 3, bytes: 30 }))
          expect(existing.keep).toBe(kept.length)
          expect([...existing.ids]).toEqual(["a", "b"])
          // a whole record whose newline was not written is kept, and gets its newline
          yield* fs.writeFileString(`${dir}/whole.jsonl`, kept + okLine("c"))
          const whole = yield* OutputFile.scan(`${dir}/whole.jsonl`)
          expect([whole.torn, whole.missingNewline, [...whole.ids]]).toEqual([Option.none(), true, ["a", "b", "c"]])
        })
      ))

    it.effect("issue 7.3: any other line that is not a record is an error naming it, whatever follows", () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          const cases: ReadonlyArray<readonly [string, string]> = [
            [`${okLine("a")}\n{oops\n${okLine("b")}\n`, 'output "F" line 2 is not a record (not valid JSON)'],
            // a torn line that an old version followed with a newline and more records
            [`${okLine("a")}\n${okLine("b").slice(0, 20)}\n${okLine("c")}\n`, 'output "F" line 2 is not a record (not valid JSON)'],
            // the last line, but with its newline: not a torn write
            [`${okLine("a")}\n{"hello":1}\n`, 'output "F" line 2 is not a record (no "status" with an "id" or a "line")'],
            [`{oops\n\n`, 'output "F" line 1 is not a record (not valid JSON)']
          ]
          for (const [text, message] of cases) {
            yield* fs.writeFileString(`${dir}/out.jsonl`, text)
            const error = yield* Effect.flip(OutputFile.scan(`${dir}/out.jsonl`))
            expect(error._tag).toBe("OutputCorrupt")
            expect(error.message.replace(`${dir}/out.jsonl`, "F")).toMatch(new RegExp(`^${message.replace(/[()]/g, "\\$&")}; only a last line torn`))
          }
        })
      ))
  })

  describe("open", () => {
    it.effect("truncate: an existing file is emptied; missing parent directories are created", () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          const path = `${dir}/out/nested/results.jsonl`
          for (const id of ["old", "new"]) {
            yield* Effect.scoped(Effect.flatMap(OutputFile.open(path, "truncate", OutputFile.none), (out) => out.sink.write(ok(id))))
          }
          expect(yield* fs.readFileString(path)).toBe(`${okLine("new")}\n`)
        })
      ))

    it.effect("issue 7.3: append cuts a torn last line off first, so the file stays JSON Lines", () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          const path = `${dir}/out.jsonl`
          yield* fs.writeFileString(path, `${okLine("a")}\n${okLine("b").slice(0, 30)}`)
          const existing = yield* OutputFile.scan(path)
          yield* Effect.scoped(Effect.flatMap(OutputFile.open(path, "append", existing), (out) => out.sink.write(ok("b"))))
          expect(yield* fs.readFileString(path)).toBe(`${okLine("a")}\n${okLine("b")}\n`)
          // a whole last record without its newline gets one before the next record
          yield* fs.writeFileString(path, okLine("a"))
          const whole = yield* OutputFile.scan(path)
          yield* Effect.scoped(Effect.flatMap(OutputFile.open(path, "append", whole), (out) => out.sink.write(ok("c"))))
          expect(yield* fs.readFileString(path)).toBe(`${okLine("a")}\n${okLine("c")}\n`)
        })
      ))

    it.effect("issue 7.7: rewrite replaces the failed records, keeps the rest, and the old file is untouched until commit", () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          const path = `${dir}/out.jsonl`
          const before = [okLine("a"), failedLine("b"), invalidLine(3), failedLine("gone"), okLine("d").slice(0, 12)].join("\n")
          yield* fs.writeFileString(path, before)
          yield* fs.chmod(path, 0o640)
          const existing = yield* OutputFile.scan(path)
          yield* Effect.scoped(Effect.gen(function*() {
            const out = yield* OutputFile.open(path, "rewrite", existing)
            yield* out.sink.write(ok("b"))
            yield* out.sink.write(ok("d"))
            expect(yield* fs.readFileString(path)).toBe(before)
            yield* out.commit
          }))
          // "gone" failed and did not run again (not in the input any more): its record is kept
          expect((yield* fs.readFileString(path)).split("\n")).toEqual([
            okLine("a"), invalidLine(3), okLine("b"), okLine("d"), failedLine("gone"), ""
          ])
          expect(((yield* fs.stat(path)).mode & 0o777).toString(8)).toBe("640")
          expect((yield* fs.readDirectory(dir)).sort()).toEqual(["out.jsonl"])
        })
      ))

    it.effect("issue 7.7: a rewrite cut short (a failure, a signal) is committed when its scope closes: nothing is lost", () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          const path = `${dir}/out.jsonl`
          yield* fs.writeFileString(path, [failedLine("a"), failedLine("b"), okLine("c")].join("\n") + "\n")
          const existing = yield* OutputFile.scan(path)
          const scope = yield* Scope.make()
          const out = yield* Scope.extend(OutputFile.open(path, "rewrite", existing), scope)
          yield* out.sink.write(failed("a"))
          yield* Scope.close(scope, Exit.fail("interrupted"))
          const after = (yield* fs.readFileString(path)).trim().split("\n").map((line) => JSON.parse(line))
          expect(after.map((r) => [r.id, r.status, r.attempts])).toEqual([["c", "succeeded", 1], ["a", "failed", 2], ["b", "failed", 4]])
        })
      ))

    it.effect("rewrite through a symbolic link replaces the file it names and keeps the link", () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          yield* fs.makeDirectory(`${dir}/real`)
          yield* fs.writeFileString(`${dir}/real/out.jsonl`, failedLine("a") + "\n")
          yield* Effect.promise(() => symlink(`${dir}/real/out.jsonl`, `${dir}/link.jsonl`))
          const existing = yield* OutputFile.scan(`${dir}/link.jsonl`)
          yield* Effect.scoped(Effect.flatMap(OutputFile.open(`${dir}/link.jsonl`, "rewrite", existing), (out) =>
            Effect.zipRight(out.sink.write(ok("a")), out.commit)))
          expect(yield* fs.readLink(`${dir}/link.jsonl`)).toBe(`${dir}/real/out.jsonl`)
          expect(yield* fs.readFileString(`${dir}/real/out.jsonl`)).toBe(`${okLine("a")}\n`)
        })
      ))

    it.effect("a FIFO (-o >(jq .)) and /dev/null are written and committed: no offset to write at, nothing to sync", () =>
      withTempDir((dir) =>
        Effect.gen(function*() {
          const fifo = `${dir}/out.fifo`
          execFileSync("mkfifo", [fifo])
          const read = Effect.promise(() => readFile(fifo, "utf8"))
          const write = (path: string) =>
            Effect.scoped(Effect.gen(function*() {
              const output = yield* OutputFile.open(path, "truncate", OutputFile.none)
              yield* output.sink.write(ok("a"))
              yield* output.sink.write(ok("b"))
              yield* output.commit
            }))
          const [text] = yield* Effect.all([read, write(fifo)], { concurrency: 2 })
          expect(text).toBe(`${okLine("a")}\n${okLine("b")}\n`)
          yield* write("/dev/null")
        })
      ))

    it.effect("an output path that cannot be created fails with OutputFailed naming it", () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          yield* fs.writeFileString(`${dir}/file`, "")
          const result = yield* Effect.either(Effect.scoped(OutputFile.open(`${dir}/file/results.jsonl`, "truncate", OutputFile.none)))
          expect(Either.isLeft(result) && result.left.message).toMatch(new RegExp(`^cannot write output "${dir}/file/results.jsonl": `))
        })
      ))
  })

  it.effect("issue 7.1: isInput sees one file behind different names: ./x, a symbolic link, a hard link, stdin", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const input = `${dir}/t.jsonl`
        yield* fs.writeFileString(input, okLine("a"))
        yield* Effect.promise(() => symlink(input, `${dir}/sym.jsonl`))
        yield* Effect.promise(() => link(input, `${dir}/hard.jsonl`))
        yield* fs.writeFileString(`${dir}/other.jsonl`, okLine("a"))
        const isInput = (output: string) => OutputFile.isInput(input, Option.some(output))
        expect(yield* isInput(input)).toBe(true)
        expect(yield* isInput(`${dir}/./t.jsonl`)).toBe(true)
        expect(yield* isInput(`${dir}/sub/../t.jsonl`)).toBe(false) // no such directory: not the same path
        expect(yield* isInput(`${dir}/sym.jsonl`)).toBe(true)
        expect(yield* isInput(`${dir}/hard.jsonl`)).toBe(true)
        expect(yield* isInput(`${dir}/other.jsonl`)).toBe(false)
        expect(yield* isInput(`${dir}/not-yet.jsonl`)).toBe(false)
        const id = yield* FileId.ofPath(input)
        const stdinIsInput = OutputFile.isInput("-", Option.some(input)).pipe(
          Effect.provide(TestStdio.make({ ...Option.match(id, { onNone: () => ({}), onSome: (stdinFile) => ({ stdinFile }) }) }).layer)
        )
        expect(yield* stdinIsInput).toBe(true)
        const stdoutIsInput = OutputFile.isInput(input, Option.none()).pipe(
          Effect.provide(TestStdio.make({ ...Option.match(id, { onNone: () => ({}), onSome: (stdoutFile) => ({ stdoutFile }) }) }).layer)
        )
        expect(yield* stdoutIsInput).toBe(true)
      })
    ))
})
