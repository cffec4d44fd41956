import * as Socket from "@effect/platform/Socket"
import { WorkflowEngine } from "@effect/workflow/WorkflowEngine"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Schedule, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as AgentService from "../../src/agent/AgentService.js"
import { AgentTask } from "../../src/agent/AgentTask.js"
import * as DurableBatch from "../../src/durable/DurableBatch.js"
import * as SqliteStore from "../../src/durable/SqliteStore.js"
import * as TaskStore from "../../src/durable/TaskStore.js"
import * as EmbeddedModel from "../../src/model/EmbeddedModel.js"

const tasks = Array.from({ length: 12 }, (_, i) => new AgentTask({ id: `t${i}`, prompt: `Summarise: item ${i}` }))

const tempFile = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "wiz-durable-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => path.join(dir, "wiz.db")))

/** The service and a worker on `filename`, the model per `model`, the agent per `agent`. */
const stack = (
  filename: string,
  model: EmbeddedModel.Options,
  unitSize?: number,
  agent: AgentService.Options = { concurrency: 4, retry: false }
) =>
  Layer.merge(
    DurableBatch.layer({ pollInterval: "20 millis", ...(unitSize === undefined ? {} : { unitSize }) }),
    DurableBatch.worker({ runner: "test" }).pipe(
      Layer.provide(AgentService.layer(agent)),
      Layer.provide(DurableBatch.journal),
      Layer.provide(EmbeddedModel.layer({ seed: 1, timeToFirstToken: "5 millis", perToken: "0 millis", ...model }))
    )
  ).pipe(Layer.provideMerge(SqliteStore.layer({ filename })))

const runBatch = (filename: string, model: EmbeddedModel.Options = {}) =>
  Effect.gen(function*() {
    const batches = yield* DurableBatch.DurableBatch
    const id = yield* batches.submit(tasks)
    const results = Chunk.toReadonlyArray(yield* Stream.runCollect(batches.results(id)))
    return { id, results, state: yield* batches.state(id) }
  }).pipe(Effect.provide(stack(filename, model)), Effect.scoped)

describe("DurableBatch on a SQLite file", () => {
  it.scopedLive("runs a batch: one result per task, and the state counts them done", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      const { id, results, state } = yield* runBatch(file)
      expect(id).toBe(DurableBatch.batchIdOf(tasks))
      expect(results.map((r) => r.id).sort()).toEqual(tasks.map((t) => t.id).sort())
      expect(results.every((r) => r.status === "succeeded" && r.attempts === 1 && r.recovered === undefined)).toBe(true)
      expect(state).toMatchObject({ total: 12, succeeded: 12, failed: 0, running: 0, queued: 0 })
    }), { timeout: 30_000 })

  it.scopedLive("issue 20: two tasks of a batch with one id fail the submission with DuplicateTaskId naming both positions (the second was dropped in silence), a part inside a unit with PartNotAligned; nothing of either is stored", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      yield* Effect.gen(function*() {
        const batches = yield* DurableBatch.DurableBatch
        const twice = [...tasks.slice(0, 3), new AgentTask({ id: "t1", prompt: "another task, the same id" })]
        const error = yield* Effect.flip(batches.submit(twice, { id: "dup" }))
        expect(error).toMatchObject({ _tag: "DuplicateTaskId", batchId: "dup", taskId: "t1", positions: [1, 3] })
        expect(error.message).toContain(`the task at position 3 has the id "t1" of the task at position 1`)
        expect(yield* Effect.flip(batches.state("dup"))).toMatchObject({ _tag: "BatchNotFound" })
        // across parts: the first part stays, the second is refused whole
        yield* batches.submit(tasks.slice(0, 8), { id: "parts" })
        const later = yield* Effect.flip(batches.submit([tasks[8]!, tasks[2]!], { id: "parts", from: 8 }))
        expect(later).toMatchObject({ _tag: "DuplicateTaskId", taskId: "t2", positions: [2, 9] })
        expect(yield* batches.state("parts")).toMatchObject({ total: 8 })
        // a part at a position inside a unit (of 8) would join a unit already submitted
        const misaligned = yield* Effect.flip(batches.submit([tasks[8]!], { id: "parts", from: 3 }))
        expect(misaligned).toMatchObject({ _tag: "PartNotAligned", batchId: "parts", from: 3, unitSize: 8 })
        // the same part submitted again is not a duplicate, and its tasks run once
        expect(yield* batches.submit(tasks.slice(0, 8), { id: "parts" })).toBe("parts")
        const results = Chunk.toReadonlyArray(yield* Stream.runCollect(batches.results("parts")))
        expect(results.map((r) => r.id).sort()).toEqual(tasks.slice(0, 8).map((t) => t.id).sort())
      }).pipe(Effect.provide(stack(file, {})), Effect.scoped)
    }), { timeout: 30_000 })

  it.scopedLive("the same batch submitted again is not run again: its records come from the store", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      const first = yield* runBatch(file)
      // a model that fails every call: a task run again would fail
      const again = yield* runBatch(file, { failureRate: 1 })
      expect(again.id).toBe(first.id)
      const outputs = (results: ReadonlyArray<{ readonly id: string }>) =>
        Object.fromEntries(results.map((r) => [r.id, JSON.stringify(r)]))
      expect(outputs(again.results)).toEqual(outputs(first.results))
      expect(again.state.succeeded).toBe(12)
    }), { timeout: 30_000 })

  it.scopedLive("a task whose earlier runs were cut off mid-call runs again and its record says so: recovered, attempts across runs", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      const id = DurableBatch.batchIdOf(tasks)
      // runs that called the model for t3 (twice: two runs) and t7, and died before their records
      yield* Effect.gen(function*() {
        const store = yield* TaskStore.make
        yield* store.addBatch(id, tasks)
        yield* store.called(id, "t3", "dead-1")
        yield* store.called(id, "t3", "dead-2")
        yield* store.called(id, "t7", "dead-2")
        expect(yield* store.state(id)).toMatchObject({ _tag: "Some", value: { running: 2, queued: 10 } })
        expect(yield* store.runningByRunner).toEqual(new Map([["dead-2", 2]]))
      }).pipe(Effect.provide(SqliteStore.database(file)), Effect.scoped)
      const { results } = yield* runBatch(file)
      const byId = new Map(results.map((r) => [r.id, r]))
      expect(byId.get("t3")).toMatchObject({ status: "succeeded", attempts: 3, recovered: true })
      expect(byId.get("t7")).toMatchObject({ status: "succeeded", attempts: 2, recovered: true })
      expect(results.filter((r) => r.recovered === true).length).toBe(2)
    }), { timeout: 30_000 })

  it.scopedLive("a task's deadline starts when its turn comes, as in processAll: not while it waits behind the other units' tasks", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      // 24 tasks in 3 units, 2 calls at once of 100 ms: the last turn comes ~1.2 s in, twice the deadline
      const batch = Array.from({ length: 24 }, (_, i) => new AgentTask({ id: `d${i}`, prompt: `Summarise: item ${i}` }))
      const results = yield* Effect.gen(function*() {
        const batches = yield* DurableBatch.DurableBatch
        const id = yield* batches.submit(batch)
        return Chunk.toReadonlyArray(yield* Stream.runCollect(batches.results(id)))
      }).pipe(
        Effect.provide(stack(file, { timeToFirstToken: "100 millis" }, undefined, { concurrency: 2, retry: false, deadline: "600 millis" })),
        Effect.scoped
      )
      expect(results.length).toBe(24)
      expect(results.filter((r) => r.status !== "succeeded").map((r) => r.id)).toEqual([])
    }), { timeout: 30_000 })

  it.scopedLive("a second holder of the file is refused at once with StoreInUse", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      yield* Layer.build(SqliteStore.database(file))
      const started = performance.now()
      const error = yield* Effect.flip(Layer.build(SqliteStore.database(file)))
      // at once: no busy wait (better-sqlite3 would wait 5 s by default before "database is locked")
      expect(performance.now() - started).toBeLessThan(1_000)
      expect(error._tag).toBe("StoreInUse")
      expect(error.message).toContain("in use by another process")
    }), { timeout: 30_000 })

  it.scopedLive("issue 20: a batch submitted in parts runs each task once, and its results end only after the last part", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      yield* Effect.gen(function*() {
        const batches = yield* DurableBatch.DurableBatch
        let submitted = false
        // units of 4: parts of 4 and 8 tasks start units
        yield* batches.submit(tasks.slice(0, 4), { id: "parts", from: 0 })
        const reading = yield* Effect.fork(Stream.runCollect(batches.results("parts", { submitted: Effect.sync(() => submitted) })))
        // the first part done: the stream goes on, waiting for the rest
        yield* Effect.repeat(batches.state("parts"), { schedule: Schedule.spaced("20 millis"), until: (s) => s.succeeded === 4 })
        yield* Effect.sleep("100 millis")
        expect(reading.unsafePoll()).toBeNull()
        yield* batches.submit(tasks.slice(4), { id: "parts", from: 4 })
        submitted = true
        const results = Chunk.toReadonlyArray(yield* Fiber.join(reading))
        expect(results.map((r) => r.id).sort()).toEqual(tasks.map((t) => t.id).sort())
        expect(results.every((r) => r.status === "succeeded" && r.attempts === 1)).toBe(true)
        // submitted again, whole: every task recorded, nothing runs, the same records
        yield* batches.submit(tasks, { id: "parts" })
        expect(yield* batches.state("parts")).toMatchObject({ total: 12, succeeded: 12, running: 0, queued: 0 })
      }).pipe(Effect.provide(stack(file, {}, 4)), Effect.scoped)
    }), { timeout: 30_000 })

  it("batchIdOf: the same tasks name the same batch, any change another", () => {
    const other = [...tasks.slice(0, 11), new AgentTask({ id: "t11", prompt: "Summarise: something else" })]
    expect(DurableBatch.batchIdOf(tasks)).toBe(DurableBatch.batchIdOf([...tasks]))
    expect(DurableBatch.batchIdOf(other)).not.toBe(DurableBatch.batchIdOf(tasks))
  })
  it.scopedLive("a unit whose hand-over to its runner dies of a SocketError (a runner killed as units are handed to it) is handed over again: the batch runs, each task once", () =>
    Effect.gen(function*() {
      const file = yield* tempFile
      // the engine as the cluster gives it, but the first hand-over of each unit fails as a
      // write to a dead runner's socket does: a defect
      const failed = new Set<string>()
      const failingOnce = Layer.effect(
        WorkflowEngine,
        Effect.map(WorkflowEngine, (engine) =>
          WorkflowEngine.of({
            ...engine,
            execute: ((workflow, options) => {
              if (failed.has(options.executionId)) return engine.execute(workflow, options)
              failed.add(options.executionId)
              return Effect.die(new Socket.SocketGenericError({ reason: "Write", cause: new Error("ECONNRESET") }))
            }) as WorkflowEngine["Type"]["execute"]
          }))
      )
      const layer = Layer.merge(
        DurableBatch.layer({ pollInterval: "20 millis", unitSize: 4 }).pipe(Layer.provide(failingOnce)),
        DurableBatch.worker({ runner: "test" }).pipe(
          Layer.provide(AgentService.layer({ concurrency: 4, retry: false })),
          Layer.provide(DurableBatch.journal),
          Layer.provide(EmbeddedModel.layer({ seed: 1, timeToFirstToken: "5 millis", perToken: "0 millis" }))
        )
      ).pipe(Layer.provideMerge(SqliteStore.layer({ filename: file })))
      const { results, state } = yield* Effect.gen(function*() {
        const batches = yield* DurableBatch.DurableBatch
        const id = yield* batches.submit(tasks)
        return { results: Chunk.toReadonlyArray(yield* Stream.runCollect(batches.results(id))), state: yield* batches.state(id) }
      }).pipe(Effect.provide(layer))
      // three units of four, each refused once and handed over again
      expect(failed.size).toBe(3)
      expect(results.map((r) => r.id).sort()).toEqual(tasks.map((t) => t.id).sort())
      expect(results.every((r) => r.status === "succeeded" && r.attempts === 1)).toBe(true)
      expect(state).toMatchObject({ total: 12, succeeded: 12, failed: 0 })
    }), { timeout: 30_000 })
})
