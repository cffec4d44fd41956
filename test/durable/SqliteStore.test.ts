import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
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

  it.scopedLive("a second process on the same store is refused at once, with a clear error", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      // this process holds the store
      yield* Layer.build(SqliteStore.database(path.join(dir, "wiz.db")))
      const refused = yield* Process.wiz(["status", "--store", "wiz.db"], { cwd: dir })
      expect(refused.code).toBe(1)
      expect(refused.stderr).toContain(`the store "wiz.db" is in use by another process`)
      expect(refused.stderr).not.toContain("database is locked")
    }), { timeout: 90_000 })
})
