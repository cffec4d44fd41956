import * as Runner from "@effect/cluster/Runner"
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import * as RunnerStorage from "@effect/cluster/RunnerStorage"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Chunk, Context, Duration, Effect, Exit, Fiber, Layer, Option, Stream } from "effect"
import { performance } from "node:perf_hooks"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as AgentService from "../../src/agent/AgentService.js"
import { AgentTask } from "../../src/agent/AgentTask.js"
import * as DurableBatch from "../../src/durable/DurableBatch.js"
import * as PgStore from "../../src/durable/PgStore.js"
import * as TaskStore from "../../src/durable/TaskStore.js"
import * as EmbeddedModel from "../../src/model/EmbeddedModel.js"
import * as Process from "../cli/Process.js"
import * as Services from "../support/services.js"

const postgres = await Services.postgres()

/** Run one statement on the services' database. */
const admin = (statement: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement)).pipe(
    Effect.provide(PgStore.database(postgres.url, 1)),
    Effect.orDie
  )

/** A database of the test's own, dropped after it. */
const database = Effect.acquireRelease(
  Effect.gen(function*() {
    const name = Services.uniqueName("wiz_durable")
    yield* admin(`CREATE DATABASE ${name}`)
    const url = new URL(postgres.url)
    url.pathname = `/${name}`
    return { name, url: url.toString() }
  }),
  ({ name }) => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
)

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

/** A directory of the test's own, removed after it. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "wiz-durable-pg-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** A port something listens on (and hangs up on every connection) until the test ends. */
const listening = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<net.Server>((resolve) => {
      const server = net.createServer((socket) => socket.destroy()).listen(0, "127.0.0.1", () => resolve(server))
    })
  ),
  (server) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
).pipe(Effect.map((server) => (server.address() as net.AddressInfo).port))

const tasks = Array.from({ length: 20 }, (_, i) => new AgentTask({ id: `t${i}`, prompt: `Summarise: item ${i}` }))

describe.skipIf(!postgres.available)("durable batches on PostgreSQL", () => {
  it.scopedLive("a runner process works on a batch: one result per task, the state and the runner in the store", () =>
    Effect.gen(function*() {
      const db = yield* database
      const port = yield* Effect.promise(freePort)
      const store = PgStore.layer({ url: db.url, runner: Option.some({ host: "127.0.0.1", port }) })
      const stack = Layer.merge(
        DurableBatch.layer({ pollInterval: "50 millis" }),
        DurableBatch.worker({ runner: `127.0.0.1:${port}` }).pipe(
          Layer.provide(AgentService.layer({ concurrency: 4 })),
          Layer.provide(DurableBatch.journal),
          Layer.provide(EmbeddedModel.layer({ seed: 1, timeToFirstToken: "5 millis", perToken: "0 millis" }))
        )
      ).pipe(Layer.provideMerge(store))
      yield* Effect.gen(function*() {
        const batches = yield* DurableBatch.DurableBatch
        const id = yield* batches.submit(tasks, { id: "pg-test" })
        expect(id).toBe("pg-test")
        const results = Chunk.toReadonlyArray(yield* Stream.runCollect(batches.results(id)))
        expect(results.map((r) => r.id).sort()).toEqual(tasks.map((t) => t.id).sort())
        expect(results.every((r) => r.status === "succeeded" && r.attempts === 1)).toBe(true)
        expect(yield* batches.state(id)).toMatchObject({ total: 20, succeeded: 20, running: 0, queued: 0 })
        expect((yield* batches.batches).map((b) => b.batchId)).toEqual(["pg-test"])
        const store = yield* TaskStore.make
        const runners = yield* store.runners
        expect(runners.map((r) => r.address)).toContain(`127.0.0.1:${port}`)
        expect(yield* Effect.flip(batches.state("nope"))).toMatchObject({ _tag: "BatchNotFound", batchId: "nope" })
      }).pipe(Effect.provide(stack), Effect.scoped)
    }), { timeout: 60_000 })

  it.scopedLive("issue 20: processes starting together on an empty database all start: the cluster's tables are created one at a time", () =>
    Effect.gen(function*() {
      // four fresh databases, six stores starting at once on each (their own pools, as processes)
      for (let round = 0; round < 4; round++) {
        const db = yield* database
        const exits = yield* Effect.all(
          Array.from({ length: 6 }, () => Effect.exit(Layer.build(PgStore.layer({ url: db.url, runner: Option.none(), maxConnections: 2 })))),
          { concurrency: "unbounded" }
        )
        expect(exits.filter(Exit.isFailure).map((exit) => Cause.pretty(exit.cause))).toEqual([])
      }
    }), { timeout: 60_000 })

  it.scopedLive("issue 20: a store whose database cannot be reached fails with a StoreError saying why, not only that it failed", () =>
    Effect.gen(function*() {
      const missing = new URL(postgres.url)
      missing.pathname = `/${Services.uniqueName("wiz_missing")}`
      const error = yield* Effect.flip(Layer.build(PgStore.layer({ url: missing.toString(), runner: Option.none() })))
      expect(error).toMatchObject({ _tag: "StoreError", operation: "connect" })
      expect(error.message).toContain(`database "${missing.pathname.slice(1)}" does not exist`)
    }), { timeout: 60_000 })

  it.scopedLive("issue 20: a database no runner has joined yet has no runners, and wiz status can say so", () =>
    Effect.gen(function*() {
      const db = yield* database
      const runners = yield* Effect.flatMap(TaskStore.make, (store) => store.runners).pipe(Effect.provide(PgStore.database(db.url, 1)))
      expect(runners).toEqual([])
    }), { timeout: 60_000 })

  it.scopedLive("issue 20: wiz run --no-work with no worker alive says the batch waits for one; a worker whose port is taken says where and why", () =>
    Effect.gen(function*() {
      const db = yield* database
      const dir = yield* tempDir
      fs.writeFileSync(path.join(dir, "tasks.jsonl"), tasks.map((t) => JSON.stringify(t)).join("\n") + "\n")
      const run = yield* Process.startWiz(["run", "tasks.jsonl", "-o", "out.jsonl", "--store", db.url, "--no-work", "--no-progress"], { cwd: dir })
      yield* run.until((_, stderr) => stderr.includes("no worker is working on this store yet"), 60)
      run.child.kill("SIGINT")
      expect((yield* run.exited(30)).code).toBe(130)

      const port = yield* listening
      const worker = yield* Process.wiz(["worker", "--store", db.url, "--port", String(port)], { cwd: dir })
      expect(worker.code).toBe(1)
      expect(worker.stderr).toContain(`wiz: cannot listen for the other runners at 127.0.0.1:${port}: listen EADDRINUSE`)
    }), { timeout: 90_000 })

  it.scopedLive("a runner counts another whose address refuses connections as unhealthy within seconds, so its shards move; one that answers stays healthy", () =>
    Effect.gen(function*() {
      const db = yield* database
      const [self, dead] = yield* Effect.promise(() => Promise.all([freePort(), freePort()]))
      const livePort = yield* listening
      // the cluster's own health check, a singleton, put off for an hour: only the watch can tell
      yield* Layer.build(PgStore.layer({
        url: db.url,
        runner: Option.some({ host: "127.0.0.1", port: self }),
        shardingConfig: { runnerHealthCheckInterval: Duration.hours(1) }
      }))
      const others = Effect.gen(function*() {
        const storage = yield* RunnerStorage.RunnerStorage
        for (const port of [dead, livePort]) {
          yield* storage.register(Runner.make({ address: RunnerAddress.make("127.0.0.1", port), groups: ["default"], weight: 1 }), true)
        }
      }).pipe(Effect.provide(SqlRunnerStorage.layer.pipe(
        Layer.provide(ShardingConfig.layer()),
        // the storage keeps a connection of its own for its locks
        Layer.provide(PgStore.database(db.url, 3))
      )))
      yield* others
      const health = Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql<{ address: string; healthy: boolean }>`SELECT address, healthy FROM cluster_runners`).pipe(
        Effect.map((rows) => new Map(rows.map((row) => [row.address, Boolean(row.healthy)]))),
        Effect.provide(PgStore.database(db.url, 1))
      )
      const start = Date.now()
      let seen = yield* health
      while (seen.get(`127.0.0.1:${dead}`) !== false && Date.now() - start < 10_000) {
        yield* Effect.sleep("200 millis")
        seen = yield* health
      }
      expect(seen.get(`127.0.0.1:${dead}`)).toBe(false)
      expect(Date.now() - start).toBeLessThan(5_000)
      expect(seen.get(`127.0.0.1:${livePort}`)).toBe(true)
      expect(seen.get(`127.0.0.1:${self}`)).toBe(true)
    }).pipe(Effect.orDie), { timeout: 60_000 })

  it.scopedLive("a runner listens on the interface `listen` names and is registered at `host`, where the others reach it", () =>
    Effect.gen(function*() {
      const db = yield* database
      const port = yield* Effect.promise(freePort)
      // 127.0.0.2 is loopback too: listening on it alone, the runner would refuse 127.0.0.1
      yield* Layer.build(PgStore.layer({ url: db.url, runner: Option.some({ host: "127.0.0.2", port, listen: "0.0.0.0" }) }))
      const addresses = yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ address: string }>`SELECT address FROM cluster_runners`).pipe(
        Effect.provide(PgStore.database(db.url, 1))
      )
      expect(addresses.map((row) => row.address)).toEqual([`127.0.0.2:${port}`])
      for (const host of ["127.0.0.1", "127.0.0.2"]) {
        const connected = yield* Effect.async<boolean>((resume) => {
          const socket = net.connect({ host, port })
          socket.once("connect", () => {
            socket.destroy()
            resume(Effect.succeed(true))
          })
          socket.once("error", () => resume(Effect.succeed(false)))
        })
        expect({ host, connected }).toEqual({ host, connected: true })
      }
    }).pipe(Effect.orDie), { timeout: 60_000 })

  it.scopedLive("issue 20: a unit whose shard moves to a runner that joined is handed over once its calls can have ended (longestCall + 1 s), not after the cluster's 15 s; no call is made twice", () =>
    Effect.gen(function*() {
      const db = yield* database
      const [first, second] = yield* Effect.promise(() => Promise.all([freePort(), freePort()]))
      // one call at a time per runner, 100 ms each: 96 tasks (12 units) are ~10 s of work alone
      const runner = (port: number) =>
        DurableBatch.worker({ runner: `127.0.0.1:${port}` }).pipe(
          Layer.provide(AgentService.layer({ concurrency: 1, timeout: "1 second" })),
          Layer.provide(DurableBatch.journal),
          Layer.provide(EmbeddedModel.layer({ seed: 1, timeToFirstToken: "100 millis", perToken: "0 millis", jitter: 0 })),
          Layer.provideMerge(PgStore.layer({ url: db.url, runner: Option.some({ host: "127.0.0.1", port }), longestCall: "1 second" }))
        )
      const work = Array.from({ length: 96 }, (_, i) => new AgentTask({ id: `m${i}`, prompt: `Summarise: moving item ${i}` }))
      const here = yield* Layer.build(DurableBatch.layer({ pollInterval: "50 millis" }).pipe(Layer.provideMerge(runner(first))))
      const batches = Context.get(here, DurableBatch.DurableBatch)
      const id = yield* batches.submit(work, { id: "moving" })
      const results = yield* Stream.runCollect(batches.results(id)).pipe(Effect.fork)
      yield* Effect.sleep("1 second")
      // the second runner joins: shards (and the first runner's units on them) move to it
      const joined = performance.now()
      yield* Layer.build(runner(second))
      const records = Chunk.toReadonlyArray(yield* Fiber.join(results))
      const after = performance.now() - joined
      expect(records.map((r) => r.id).sort()).toEqual(work.map((t) => t.id).sort())
      expect(records.every((r) => r.status === "succeeded" && r.attempts === 1)).toBe(true)
      // units moved: the second runner made some of the calls
      const byRunner = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql<{ runner: string; tasks: number }>`SELECT runner, count(*)::int AS tasks FROM wiz_tasks GROUP BY runner`).pipe(
        Effect.provide(here)
      )
      expect(byRunner.find((row) => row.runner === `127.0.0.1:${second}`)?.tasks ?? 0).toBeGreaterThan(0)
      // a unit handed over 2 s after its shard moved (8.7 s from the join to the last record on a
      // quiet machine); the cluster's default holds a moving unit 15 s (22 s measured)
      expect(after).toBeLessThan(15_000)
    }).pipe(Effect.orDie), { timeout: 60_000 })

  it.scopedLive("wiz worker does the work of wiz run --no-work; wiz status shows both; SIGTERM stops the worker with exit 0", () =>
    Effect.gen(function*() {
      const db = yield* database
      const dir = yield* tempDir
      fs.writeFileSync(path.join(dir, "tasks.jsonl"), tasks.map((t) => JSON.stringify(t)).join("\n") + "\nnot json\n")
      const port = yield* Effect.promise(freePort)
      const worker = yield* Process.startWiz(
        ["worker", "--store", db.url, "--port", String(port), "--time-to-first-token", "20 millis", "--per-token", "0"],
        { cwd: dir }
      )
      yield* worker.until((_, stderr) => stderr.includes("SIGTERM stops it"), 60)
      const run = yield* Process.wiz(["run", "tasks.jsonl", "-o", "out.jsonl", "--store", db.url, "--no-work"], { cwd: dir })
      expect(run.code).toBe(0)
      const records = fs.readFileSync(path.join(dir, "out.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
      expect(records.length).toBe(21)
      expect(records.filter((r) => r.status === "succeeded").length).toBe(20)
      expect(records.filter((r) => r.status === "invalid").length).toBe(1)
      // the retries, breaker transitions and fallbacks were the worker's: not a 0 counted here,
      // on the progress line's last drawing nor in the summary
      expect(run.stderr).toMatch(/\n21\/21 done, 0 failed, 1 invalid, [\d.]+\/s, ETA 0s\n/)
      expect(run.stderr).toContain(
        "attempts    20 (retries: not seen here, each worker prints its own when it stops)\n" +
          "breaker     -- (not seen here)\nfallbacks   -- (not seen here)\n"
      )
      const status = yield* Process.wiz(["status", "--store", db.url], { cwd: dir })
      expect(status.code).toBe(0)
      expect(status.stdout).toMatch(/f-[0-9a-f]{16} +20 tasks +20 succeeded +0 failed +0 running +0 queued/)
      expect(status.stdout).toContain(`127.0.0.1:${port}`)
      expect(status.stdout).toMatch(/127\.0\.0\.1:\d+ +healthy/)
      worker.child.kill("SIGTERM")
      const stopped = yield* worker.exited(30)
      expect(stopped.code).toBe(0)
      // the default --timeout of 30 s, and a second
      expect(stopped.stderr).toContain("handing its shards back once its calls on the wire are recorded (up to 31s;")
      // then what it did, which the run with --no-work could not see
      expect(stopped.stderr).toMatch(
        /stopped after 20 tasks \(20 succeeded, 0 failed\): 20 attempts, 0 retries, 0 breaker transitions, 0 fallbacks\n/
      )
    }), { timeout: 120_000 })
})

describe("PgStore.terminationTimeout", () => {
  it.effect("what a stop waits for: shardingConfig's, else ENTITY_TERMINATION_TIMEOUT's, else longestCall + 1 s, else the cluster's 15 s", () =>
    Effect.gen(function*() {
      const before = process.env.ENTITY_TERMINATION_TIMEOUT
      delete process.env.ENTITY_TERMINATION_TIMEOUT
      try {
        const seconds = (options: Parameters<typeof PgStore.terminationTimeout>[0]) =>
          Effect.map(PgStore.terminationTimeout(options), Duration.toSeconds)
        expect(yield* seconds({ longestCall: "2 seconds" })).toBe(3)
        expect(yield* seconds({ longestCall: Duration.infinity })).toBe(15)
        expect(yield* seconds({})).toBe(15)
        process.env.ENTITY_TERMINATION_TIMEOUT = "7 seconds"
        expect(yield* seconds({ longestCall: "2 seconds" })).toBe(7)
        expect(yield* seconds({ longestCall: "2 seconds", shardingConfig: { entityTerminationTimeout: Duration.seconds(4) } })).toBe(4)
      } finally {
        if (before === undefined) delete process.env.ENTITY_TERMINATION_TIMEOUT
        else process.env.ENTITY_TERMINATION_TIMEOUT = before
      }
    }))
})

// no database needed: refused before one is reached
describe("wiz run --store postgres:// (refused options)", () => {
  it.scopedLive("issue 20: wiz run --store URL --no-work --events is refused, and says why: it runs no task to have events of", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "wiz-pg-events-"))),
        (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
      )
      fs.writeFileSync(path.join(dir, "tasks.jsonl"), JSON.stringify({ id: "t", prompt: "p" }) + "\n")
      const run = yield* Process.wiz(
        ["run", "tasks.jsonl", "-o", "out.jsonl", "--store", "postgres://nowhere.invalid/db", "--no-work", "--events", "ev.jsonl"],
        { cwd: dir }
      )
      expect(run.code).toBe(2)
      expect(run.stderr).toContain("--events with --store writes the events of the tasks run in this process: with --no-work it runs none")
      expect(fs.existsSync(path.join(dir, "out.jsonl"))).toBe(false)
    }), { timeout: 60_000 })

  it.scopedLive("wiz worker --host 0.0.0.0 is refused: it is the address the others would connect to, which reaches no machine; --listen is the interface", () =>
    Effect.gen(function*() {
      for (const host of ["0.0.0.0", "::"]) {
        const worker = yield* Process.wiz(["worker", "--store", "postgres://nowhere.invalid/db", "--host", host], { cwd: os.tmpdir() })
        expect(worker.code).toBe(2)
        expect(worker.stderr).toContain(`--host ${host} is where the other workers would connect to this one, and it reaches no machine`)
        expect(worker.stderr).toContain(`--listen ${host} to listen on every interface`)
      }
    }), { timeout: 60_000 })

  it.scopedLive("wiz worker with a malformed ENTITY_TERMINATION_TIMEOUT says which value it could not read, as a configuration error", () =>
    Effect.gen(function*() {
      const worker = yield* Process.wiz(["worker", "--store", "postgres://nowhere.invalid/db"], {
        cwd: os.tmpdir(),
        env: { ENTITY_TERMINATION_TIMEOUT: "banana" }
      })
      expect(worker.code).toBe(1)
      expect(worker.stderr).toContain(`Invalid data at entityTerminationTimeout: "Expected a duration but received "banana""`)
      expect(worker.stderr).not.toContain("    at ")
    }), { timeout: 60_000 })
})
