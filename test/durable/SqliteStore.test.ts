import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import * as SqliteStore from "../../src/durable/SqliteStore.js"
import * as Process from "../cli/Process.js"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "wiz-durable-kill-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const lines = (file: string): Array<string> =>
  fs.existsSync(file) ? fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "") : []

// 80 tasks, 3 of them invalid lines; each call takes 150 ms, 4 at a time: about 3 s of work
const input = [
  ...Array.from({ length: 40 }, (_, i) => JSON.stringify({ id: `a${i}`, prompt: `Summarise: item ${i}` })),
  "not json",
  JSON.stringify({ id: "a1", prompt: "a duplicate id" }),
  JSON.stringify({ id: "", prompt: "an empty id" }),
  ...Array.from({ length: 37 }, (_, i) => JSON.stringify({ id: `b${i}`, prompt: `Summarise: other ${i}` }))
].join("\n") + "\n"
const model = (firstToken = "150 millis") =>
  ["--time-to-first-token", firstToken, "--per-token", "0 millis", "--concurrency", "4", "--no-progress", "--seed", "1"]

describe("wiz run --store FILE (SQLite)", () => {
  it.scopedLive("kill -9 mid-batch, then the same command: one record per line, done tasks not run again, cut-off ones recovered", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      fs.writeFileSync(path.join(dir, "tasks.jsonl"), input)
      const args = ["run", "tasks.jsonl", "-o", "out.jsonl", "--store", "wiz.db", ...model()]
      const first = yield* Process.startWiz(args, { cwd: dir })
      // killed once some records are out and calls are in flight
      yield* first.until(() => lines(path.join(dir, "out.jsonl")).length >= 25, 60)
      first.child.kill("SIGKILL")
      const killed = yield* first.exited(10)
      expect(killed.signal).toBe("SIGKILL")
      const before = lines(path.join(dir, "out.jsonl")).map((l) => JSON.parse(l))
      const doneBefore = new Map(before.filter((r) => r.status === "succeeded").map((r) => [r.id, JSON.stringify(r)]))

      const second = yield* Process.wiz(args, { cwd: dir })
      expect(second.code).toBe(0)
      const after = lines(path.join(dir, "out.jsonl")).map((l) => JSON.parse(l))
      // exactly one record per input line: 77 tasks and 3 invalid lines
      expect(after.length).toBe(80)
      expect(after.filter((r) => r.status === "invalid").length).toBe(3)
      const ids = after.filter((r) => r.status !== "invalid").map((r) => r.id)
      expect(new Set(ids).size).toBe(77)
      expect(after.every((r) => r.status !== "failed")).toBe(true)
      // a task recorded before the kill has the very same record: it was not run again
      for (const r of after) if (doneBefore.has(r.id)) expect(JSON.stringify(r)).toBe(doneBefore.get(r.id))
      // the calls in flight at the kill (at most 4) were made again, and their records say so
      const recovered = after.filter((r) => r.recovered === true)
      expect(recovered.length).toBeGreaterThan(0)
      expect(recovered.length).toBeLessThanOrEqual(4)
      for (const r of recovered) expect(r.attempts).toBeGreaterThanOrEqual(2)
      expect(second.stderr).toContain("succeeded   77")
    }), { timeout: 90_000 })

  it.scopedLive("issue 20: Ctrl-C stops a run on a SQLite store within seconds and says so; the same command then finishes the batch, the calls it cut made again", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      fs.writeFileSync(path.join(dir, "tasks.jsonl"), input)
      // calls of 3 s: Ctrl-C comes while 4 are on the wire
      const args = ["run", "tasks.jsonl", "-o", "out.jsonl", "--store", "wiz.db"]
      const first = yield* Process.startWiz([...args, ...model("3 seconds")], { cwd: dir })
      yield* first.until((_, stderr) => stderr.includes("wiz: batch"), 60)
      yield* Effect.sleep("1 second")
      const signalled = performance.now()
      first.child.kill("SIGINT")
      const stopped = yield* first.exited(30)
      // the cluster held a stopping runner's units 15 s, in silence
      expect(performance.now() - signalled).toBeLessThan(10_000)
      expect(stopped.code).toBe(130)
      expect(stopped.stderr).toContain("wiz: stopping: the calls on the wire have a second to answer")
      // and, as a run without a store does, the summary of what it wrote
      const written = lines(path.join(dir, "out.jsonl")).length
      expect(stopped.stderr).toMatch(/goes on with the batch\nsucceeded {3}\d+\n/)
      expect(stopped.stderr).toMatch(/\nwall time {3}\d/)
      const summed = ["succeeded", "failed", "invalid"].map((what) => Number(stopped.stderr.match(new RegExp(`\\n?${what} +(\\d+)`))?.[1]))
      expect(summed[0]! + summed[1]! + summed[2]!).toBe(written)

      // the same command, its model answering faster
      const second = yield* Process.wiz([...args, ...model("20 millis")], { cwd: dir })
      expect(second.code).toBe(0)
      const after = lines(path.join(dir, "out.jsonl")).map((l) => JSON.parse(l))
      expect(after.length).toBe(80)
      expect(new Set(after.filter((r) => r.status !== "invalid").map((r) => r.id)).size).toBe(77)
      // the calls cut at the stop were made again, and their records say so
      expect(after.filter((r) => r.recovered === true).length).toBeGreaterThan(0)
    }), { timeout: 90_000 })

  it.scopedLive("issue 20: wiz run --store draws the progress line a run without a store draws, and writes --events for the tasks it runs", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      fs.writeFileSync(path.join(dir, "tasks.jsonl"), input)
      const args = ["run", "tasks.jsonl", "-o", "out.jsonl", "--store", "wiz.db", "--events", "events.jsonl"]
      const run = yield* Process.wiz([...args, ...model("20 millis").filter((a) => a !== "--no-progress")], { cwd: dir })
      expect(run.code).toBe(0)
      // the progress line's last drawing: every line answered, the invalid ones counted
      expect(run.stderr).toMatch(/80\/80 done, 0 failed, 3 invalid/)
      const events = lines(path.join(dir, "events.jsonl")).map((l) => JSON.parse(l))
      const ids = (tag: string) => events.filter((e) => e._tag === tag).map((e) => e.taskId).sort()
      const tasks = lines(path.join(dir, "out.jsonl")).map((l) => JSON.parse(l)).filter((r) => r.status !== "invalid").map((r) => r.id).sort()
      expect(tasks.length).toBe(77)
      // each task run here started and finished once, in that order
      expect(ids("TaskStarted")).toEqual(tasks)
      expect(ids("TaskFinished")).toEqual(tasks)
      for (const id of tasks) {
        expect(events.findIndex((e) => e._tag === "TaskStarted" && e.taskId === id))
          .toBeLessThan(events.findIndex((e) => e._tag === "TaskFinished" && e.taskId === id))
      }
      // run again, the batch is recorded: no task runs here, so there are no events
      const again = yield* Process.wiz([...args, ...model("20 millis")], { cwd: dir })
      expect(again.code).toBe(0)
      expect(lines(path.join(dir, "events.jsonl"))).toEqual([])
      expect(lines(path.join(dir, "out.jsonl")).length).toBe(80)
    }), { timeout: 90_000 })

  it.scopedLive("the summary's and the progress line's retries, breaker transitions and fallbacks are those of the tasks run in this process, and say so; run again on the recorded batch: none", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      fs.writeFileSync(path.join(dir, "tasks.jsonl"), input)
      const args = [
        "run", "tasks.jsonl", "-o", "out.jsonl", "--store", "wiz.db", "--events", "events.jsonl",
        "--failure-rate", "0.3", "--timeout", "500 millis", ...model("20 millis").filter((a) => a !== "--no-progress")
      ]
      const run = yield* Process.wiz(args, { cwd: dir })
      expect(run.code).toBe(0)
      const retries = lines(path.join(dir, "events.jsonl")).filter((l) => JSON.parse(l)._tag === "RetryScheduled").length
      const attempts = lines(path.join(dir, "out.jsonl")).map((l) => JSON.parse(l)).reduce((n, r) => n + (r.attempts ?? 0), 0)
      expect(retries).toBeGreaterThan(10)
      expect(run.stderr).toMatch(new RegExp(`attempts {4}${attempts} \\(${retries} retries in this process[;)]`))
      expect(run.stderr).toMatch(/breaker {5}\d+ transitions in this process\n/)
      expect(run.stderr).toContain("fallbacks   0 in this process\n")
      // the progress line's last drawing counts the same retries
      expect(run.stderr).toMatch(new RegExp(`80/80 done, \\d+ failed, 3 invalid, ${retries} retries`))
      // every task is recorded: this process runs none, and its records carry the first run's attempts
      const again = yield* Process.wiz(args, { cwd: dir })
      expect(again.code).toBe(0)
      expect(again.stderr).toContain(`attempts    ${attempts} (0 retries in this process)\n`)
    }), { timeout: 90_000 })

  it.scopedLive("issue 20: wiz run --store submits a file in parts as it reads it: killed and run again, it re-attaches, one record per line, the bad lines typed", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      // more tasks than a part (512): the batch is submitted in three parts
      const big = Array.from({ length: 1200 }, (_, i) =>
        i % 400 === 7 ? "{\"id\": 1}" : JSON.stringify({ id: `c${i}`, prompt: `Summarise: ${i}` })).join("\n") + "\n"
      fs.writeFileSync(path.join(dir, "tasks.jsonl"), big)
      const args = ["run", "tasks.jsonl", "-o", "out.jsonl", "--store", "wiz.db", "--time-to-first-token", "30 millis", "--per-token", "0 millis", "--concurrency", "16", "--no-progress"]
      const first = yield* Process.startWiz(args, { cwd: dir })
      yield* first.until(() => lines(path.join(dir, "out.jsonl")).length >= 300, 60)
      first.child.kill("SIGKILL")
      expect((yield* first.exited(10)).signal).toBe("SIGKILL")
      const second = yield* Process.wiz(args, { cwd: dir })
      expect(second.code).toBe(0)
      // the same batch: the file's identity names it
      const batch = (stderr: string) => stderr.match(/batch (\S+) in /)?.[1]
      expect(batch(second.stderr)).toBeDefined()
      expect(first.stderr()).toContain(`batch ${batch(second.stderr)} in `)
      const after = lines(path.join(dir, "out.jsonl")).map((l) => JSON.parse(l))
      expect(after.length).toBe(1200)
      const invalid = after.filter((r) => r.status === "invalid")
      expect(invalid.map((r) => r.line).sort((a, b) => a - b)).toEqual([8, 408, 808])
      expect(invalid.every((r) => r.error._tag === "InvalidTask")).toBe(true)
      const ids = after.filter((r) => r.status !== "invalid").map((r) => r.id)
      expect(new Set(ids).size).toBe(1197)
      expect(second.stderr).toContain("succeeded   1197")
    }), { timeout: 120_000 })

  it.scopedLive("a second process on the same store is refused at once, with a clear error; wiz status on a path with no store says so and makes none", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      // this process holds the store
      yield* Layer.build(SqliteStore.database(path.join(dir, "wiz.db")))
      const refused = yield* Process.wiz(["status", "--store", "wiz.db"], { cwd: dir })
      expect(refused.code).toBe(1)
      expect(refused.stderr).toContain(`the store "wiz.db" is in use by another process`)
      expect(refused.stderr).not.toContain("database is locked")
      // a mistyped path is said to be one, not made an empty store
      const missing = yield* Process.wiz(["status", "--store", "wiz-typo.db"], { cwd: dir })
      expect(missing.code).toBe(2)
      expect(missing.stderr).toContain(`no store at "wiz-typo.db" (wiz run FILE --store wiz-typo.db makes one)`)
      expect(fs.existsSync(path.join(dir, "wiz-typo.db"))).toBe(false)
    }), { timeout: 90_000 })

  it.scopedLive("issue 20: a store file that cannot be opened is a StoreError naming it and why, not a TypeError's stack", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const filename = path.join(dir, "no-such-dir", "wiz.db")
      const error = yield* Effect.flip(Layer.build(SqliteStore.database(filename)))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "open" })
      expect(error.message).toBe(`cannot open ${filename}: Cannot open database because the directory does not exist`)
      // a file that is not a database
      const text = path.join(dir, "notes.txt")
      fs.writeFileSync(text, "hello\n")
      const notDb = yield* Effect.flip(Layer.build(SqliteStore.database(text)))
      expect(notDb).toMatchObject({ _tag: "StoreError", operation: "open" })
      expect(notDb.message).toMatch(new RegExp(`^cannot open ${text}: .*file is not a database`))
    }))
})
