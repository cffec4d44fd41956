import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { AgentTask, TaskSucceeded } from "../../src/agent/AgentTask.js"
import * as SqliteStore from "../../src/durable/SqliteStore.js"
import * as TaskStore from "../../src/durable/TaskStore.js"

const tasksOf = (tag: string) => Array.from({ length: 3 }, (_, i) => new AgentTask({ id: `${tag}${i}`, prompt: `Summarise: ${i}` }))

const answer = (id: string, output: string) =>
  new TaskSucceeded({ id, status: "succeeded", output, attempts: 1, model: "embedded", degraded: false, durationMs: 1 })

const tempFile = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "wiz-taskstore-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => path.join(dir, "wiz.db")))

describe("TaskStore on a SQLite file", () => {
  it.scopedLive("a record is stored once: the first wins, a second finish returns it unchanged", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      yield* Effect.gen(function*() {
        const store = yield* TaskStore.make
        yield* store.addBatch("b1", tasksOf("t"))
        expect(yield* store.finish("b1", answer("t0", "first"))).toMatchObject({ output: "first" })
        expect(yield* store.finish("b1", answer("t0", "second"))).toMatchObject({ output: "first" })
        expect(yield* store.records("b1")).toMatchObject([{ id: "t0", output: "first" }])
        const begun = yield* store.begin("b1", ["t0", "t1"])
        expect(begun.get("t0")).toMatchObject({ _tag: "Recorded", record: { output: "first" } })
        expect(begun.get("t1")).toEqual({ _tag: "Started", callsBefore: 0 })
      }).pipe(Effect.provide(SqliteStore.database(file)), Effect.scoped)
    }), { timeout: 30_000 })

  it.scopedLive("issue 20: a store no runner has joined yet has no runners (wiz status failed on the cluster's missing table)", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      yield* Effect.gen(function*() {
        const store = yield* TaskStore.make
        expect(yield* store.runners).toEqual([])
        expect(yield* store.batches).toEqual([])
      }).pipe(Effect.provide(SqliteStore.database(file)), Effect.scoped)
    }), { timeout: 30_000 })

  it.scopedLive("records come back in the order they were stored, numbered within their batch", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      yield* Effect.gen(function*() {
        const store = yield* TaskStore.make
        yield* store.addBatch("a", tasksOf("a"))
        yield* store.addBatch("b", tasksOf("b"))
        yield* store.finish("a", answer("a2", "x"))
        yield* store.finish("b", answer("b0", "y"))
        yield* store.finish("a", answer("a0", "z"))
        const a = yield* store.recordsAfter("a", 0)
        expect(a.map(({ record, seq }) => [record.id, seq])).toEqual([["a2", 1], ["a0", 2]])
        expect((yield* store.recordsAfter("a", 1)).map(({ record }) => record.id)).toEqual(["a0"])
        expect((yield* store.recordsAfter("b", 0)).map(({ record, seq }) => [record.id, seq])).toEqual([["b0", 1]])
        expect(yield* store.state("a")).toMatchObject({ _tag: "Some", value: { total: 3, succeeded: 2, queued: 1 } })
      }).pipe(Effect.provide(SqliteStore.database(file)), Effect.scoped)
    }), { timeout: 30_000 })
})
