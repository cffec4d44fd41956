/**
 * Durable batches (issue 20), in real time against the embedded model, fault-free:
 *
 * 1. SQLite: N tasks through `DurableBatch` on a SQLite file (this process the one runner)
 *    against the same tasks through `AgentService.processAll` in memory, same options
 *    (target: durable ≤ 1.3× in memory).
 * 2. PostgreSQL: N tasks worked on by 3 `wiz worker` processes against 1, the same per-worker
 *    concurrency (target: 3 workers ≥ 2.5× faster); this process submits and reads.
 * 3. Failover: one of two workers `kill -9`ed mid-batch; the time until every task it was
 *    calling for has a record (done on the other worker).
 * 4. Chaos: 3 workers, a random one `kill -9`ed every 10 s and started again, during N tasks:
 *    every task exactly one record, repeated calls (the records' attempts beyond one each, as
 *    the call journal counts them) against the tasks the killed workers were calling for, and
 *    the time against the same run without kills (target ≤ 1.5×).
 *
 * The PostgreSQL runs start timing once the workers' cluster has settled (every shard held, each
 * worker holding some); each prints the CPU a task of the workers (during the batch) and of this
 * process, the database's transactions a task, and the model calls repeated as the store's call
 * journal counts them.
 *
 * Every process it starts is its own (workers on loopback ports it picks), killed at its end;
 * PostgreSQL databases are its own (`wiz_bench_*`), dropped at its end. Sizes and latency:
 *
 *   npm run bench -- durable
 * The workers' attempt timeout is `--timeout` (2 s: ten times a call), which also bounds how
 * long a unit whose shard moves is waited for (`PgStore.handover`: 3 s).
 *
 *   npx tsx bench/durable.ts [--sqlite-tasks 2000] [--pg-tasks 3000] [--concurrency 8] [--latency-ms 200] [--timeout "2 seconds"] [--only sqlite,pg,failover,chaos]
 *     [--profile DIR]   (workers under node --cpu-prof, their profiles in DIR)
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Chunk, Duration, Effect, Layer, Option, Schedule, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import * as AgentService from "../src/agent/AgentService.js"
import { AgentTask, type TaskResult } from "../src/agent/AgentTask.js"
import * as DurableBatch from "../src/durable/DurableBatch.js"
import * as PgStore from "../src/durable/PgStore.js"
import * as SqliteStore from "../src/durable/SqliteStore.js"
import * as TaskStore from "../src/durable/TaskStore.js"
import * as EmbeddedModel from "../src/model/EmbeddedModel.js"

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1]! : fallback
}
const sqliteTasks = Number(arg("sqlite-tasks", "2000"))
const pgTasks = Number(arg("pg-tasks", "3000"))
const concurrency = Number(arg("concurrency", "8"))
const latencyMs = Number(arg("latency-ms", "200"))
const timeout = arg("timeout", "2 seconds")
const only = new Set(arg("only", "sqlite,pg,failover,chaos").split(","))
/** With `--profile DIR`, each worker runs under `node --cpu-prof` into DIR and is stopped with SIGTERM. */
const profileDir = arg("profile", "")
const pgUrl = process.env.WIZ_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const main = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url))
const capMs = 600_000

const tasksOf = (n: number, tag: string) =>
  Array.from({ length: n }, (_, i) => new AgentTask({ id: `${tag}-${i}`, prompt: `Summarise: bench item ${i} of ${tag}` }))

const model = { timeToFirstToken: `${latencyMs} millis`, perToken: "0 millis", jitter: 0 } as const
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`

// ---------------------------------------------------------------------------------------------
// SQLite against memory
// ---------------------------------------------------------------------------------------------

const sqlite = Effect.gen(function*() {
  const tasks = tasksOf(sqliteTasks, "sqlite")
  const agent = AgentService.layer({ concurrency, maxTasks: sqliteTasks })
  const cpuMs = (since: NodeJS.CpuUsage) => {
    const used = process.cpuUsage(since)
    return (used.user + used.system) / 1000
  }
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  const memory = yield* Effect.flatMap(AgentService.AgentService, (a) => Stream.runCount(a.processAll(tasks))).pipe(
    Effect.provide(agent.pipe(Layer.provide(EmbeddedModel.layer(model))))
  )
  const memoryMs = performance.now() - t0
  const memoryCpu = cpuMs(c0)
  const c1 = process.cpuUsage()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wiz-bench-durable-"))
  const t1 = performance.now()
  const durable = yield* Effect.gen(function*() {
    const batches = yield* DurableBatch.DurableBatch
    const id = yield* batches.submit(tasks)
    return Chunk.size(yield* Stream.runCollect(batches.results(id)))
  }).pipe(
    Effect.provide(Layer.merge(
      DurableBatch.layer(),
      DurableBatch.worker({ runner: "bench" }).pipe(
        Layer.provide(agent),
        Layer.provide(DurableBatch.journal),
        Layer.provide(EmbeddedModel.layer(model))
      )
    ).pipe(Layer.provideMerge(SqliteStore.layer({ filename: path.join(dir, "wiz.db") })))),
    Effect.scoped
  )
  const durableMs = performance.now() - t1
  const durableCpu = cpuMs(c1)
  fs.rmSync(dir, { recursive: true, force: true })
  console.log(`\n### SQLite: ${sqliteTasks} tasks, concurrency ${concurrency}, ${latencyMs} ms a call\n`)
  const perTask = (ms: number) => `${(ms / sqliteTasks).toFixed(1)} ms`
  console.log("| run | tasks | time | ratio | CPU a task |\n|---|---:|---:|---:|---:|")
  console.log(`| in memory (processAll) | ${memory} | ${seconds(memoryMs)} | 1.00 | ${perTask(memoryCpu)} |`)
  console.log(
    `| durable (SQLite file) | ${durable} | ${seconds(durableMs)} | ${(durableMs / memoryMs).toFixed(2)} | ${perTask(durableCpu)} |`
  )
  console.log(`\ntarget ≤ 1.3×: ${durableMs / memoryMs <= 1.3 ? "met" : "NOT met"}`)
})

// ---------------------------------------------------------------------------------------------
// PostgreSQL: processes
// ---------------------------------------------------------------------------------------------

const children = new Set<ChildProcess>()
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL")
})

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

interface Worker {
  readonly child: ChildProcess
  readonly address: string
  /** CPU seconds it had used when the batch began (its start-up), subtracted from its share. */
  cpuAtStart: number
}

/** `wiz worker` on `url`, ready once it says so. */
const startWorker = (url: string) =>
  Effect.promise(async (): Promise<Worker> => {
    const port = await freePort()
    const child = spawn(process.execPath, [
      ...(profileDir === "" ? [] : ["--cpu-prof", "--cpu-prof-dir", profileDir]),
      "--import",
      "tsx",
      main,
      "worker",
      "--store",
      url,
      "--port",
      String(port),
      "--concurrency",
      String(concurrency),
      "--time-to-first-token",
      `${latencyMs} millis`,
      "--per-token",
      "0",
      "--timeout",
      timeout
    ], { stdio: ["ignore", "ignore", "pipe"] })
    children.add(child)
    child.on("exit", () => children.delete(child))
    await new Promise<void>((resolve, reject) => {
      let err = ""
      child.stderr!.setEncoding("utf8").on("data", (text: string) => {
        err += text
        if (err.includes("SIGTERM stops it")) resolve()
      })
      child.once("exit", (code) => reject(new Error(`worker exited ${code}: ${err}`)))
    })
    return { child, address: `127.0.0.1:${port}`, cpuAtStart: 0 }
  })

/** CPU seconds (user + system) a process has used so far, from /proc (0 where there is none). */
const cpuSeconds = (pid: number | undefined): number => {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return 0
  }
}

/** CPU seconds used by the workers stopped so far since the batch began, read just before each stop. */
let workersCpu = 0

/** Stop a worker: SIGKILL, or SIGTERM when profiling (a killed process writes no profile). */
const stopWorker = (worker: Worker, signal: NodeJS.Signals = profileDir === "" ? "SIGKILL" : "SIGTERM") =>
  Effect.sync(() => {
    if (worker.child.exitCode === null && worker.child.signalCode === null) {
      workersCpu += cpuSeconds(worker.child.pid) - worker.cpuAtStart
    }
  }).pipe(Effect.zipRight(Effect.promise(() =>
    new Promise<void>((resolve) => {
      if (worker.child.exitCode !== null || worker.child.signalCode !== null) return resolve()
      worker.child.once("exit", () => resolve())
      worker.child.kill(signal)
    })
  )))

/** Transactions committed in a database so far (PostgreSQL's statistics, flushed within a second). */
const commits = (name: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ n: unknown }>`SELECT xact_commit AS n FROM pg_stat_database WHERE datname = ${name}`).pipe(
    Effect.map((rows) => Number(rows[0]?.n ?? 0)),
    Effect.provide(PgStore.database(pgUrl, 1)),
    Effect.orDie
  )

const admin = (statement: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement)).pipe(
    Effect.provide(PgStore.database(pgUrl, 1)),
    Effect.orDie
  )

/**
 * Until the cluster has settled: every shard held (its advisory lock) and each worker holding
 * some. A worker says it is ready before it has its shards, and shards move as the others
 * join: the batch is timed from a settled cluster, as when workers run before it is submitted.
 */
const settled = (name: string, workers: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.repeat(
      sql<{ holders: unknown; shards: unknown }>`
        SELECT COUNT(DISTINCT pid) AS holders, COUNT(*) AS shards FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objid > 1000000
        AND database = (SELECT oid FROM pg_database WHERE datname = ${name})`,
      {
        schedule: Schedule.spaced("200 millis"),
        until: ([row]) => Number(row?.holders) === workers && Number(row?.shards) === 300
      }
    )).pipe(Effect.provide(PgStore.database(pgUrl, 1)), Effect.orDie, Effect.timeout("60 seconds"), Effect.orDie)

/** A database of its own for `use`, dropped after. */
const withDatabase = <A, E, R>(use: (url: string, name: string) => Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.gen(function*() {
      const name = `wiz_bench_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
      yield* admin(`CREATE DATABASE ${name}`)
      const url = new URL(pgUrl)
      url.pathname = `/${name}`
      return { name, url: url.toString() }
    }),
    ({ name, url }) => use(url, name),
    ({ name }) => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  )

/** The client side on `url`: submit, read, and the store's tables. */
const client = (url: string) =>
  DurableBatch.layer().pipe(Layer.provideMerge(PgStore.layer({ url, runner: Option.none() })))

interface Run {
  readonly ms: number
  /**
   * CPU milliseconds per task during the batch: the workers' (the start-up of those started
   * before it not included; of those started again after a kill, included), and this process's.
   */
  readonly workerCpuPerTask: number
  readonly clientCpuPerTask: number
  /** Transactions committed in the database during the batch, per task (all processes). */
  readonly commitsPerTask: number
  readonly results: ReadonlyArray<TaskResult>
  readonly kills: number
  /** Tasks a killed worker was calling the model for when it was killed, over all kills. */
  readonly inFlightAtKills: number
  /** Model calls begun beyond one per task, as the store's call journal counts them. */
  readonly repeatedCalls: number
  /** Of those, the calls repeated for tasks no killed worker was calling for at its kill. */
  readonly repeatedNotInFlight: number
  /** Tasks by the worker that called last for them, most first. */
  readonly byWorker: ReadonlyArray<number>
}

/**
 * `tasks` on `workers` fresh workers on a fresh database; every `killEvery` ms (if given) a
 * random worker is killed with SIGKILL and a new one started.
 */
const pgRun = (tasks: ReadonlyArray<AgentTask>, workers: number, killEvery?: number) =>
  withDatabase((url, name) =>
    Effect.gen(function*() {
      // the tables first, so the workers do not race to create them
      yield* Effect.scoped(Layer.build(client(url)))
      workersCpu = 0
      const running = yield* Effect.forEach(Array.from({ length: workers }), () => startWorker(url), { concurrency: workers })
      yield* settled(name, workers)
      let kills = 0
      let inFlightAtKills = 0
      const inFlight = new Set<string>()
      const chaos = Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        while (true) {
          yield* Effect.sleep(killEvery!)
          const i = Math.floor(Math.random() * running.length)
          const victim = running[i]!
          yield* stopWorker(victim, "SIGKILL")
          // what it was calling for: a call begun there (the journal notes it first) and no record;
          // read after the kill, so no call begun between the read and the kill is missed (none of
          // them can have been taken up elsewhere yet: that waits for the failover)
          const calling = yield* sql<{ task_id: string }>`
            SELECT task_id FROM wiz_tasks WHERE status = 'running' AND runner = ${victim.address}`
          kills++
          inFlightAtKills += calling.length
          for (const { task_id } of calling) inFlight.add(task_id)
          running[i] = yield* startWorker(url)
        }
      })
      for (const worker of running) worker.cpuAtStart = cpuSeconds(worker.child.pid)
      const commits0 = yield* commits(name)
      const t0 = performance.now()
      const cpu0 = process.cpuUsage()
      const outcome = yield* Effect.gen(function*() {
        const batches = yield* DurableBatch.DurableBatch
        // the kills start with the submission: the workers run tasks as they are submitted, and a
        // loaded machine can take most of the run to submit them
        if (killEvery !== undefined) yield* Effect.fork(chaos.pipe(Effect.tapErrorCause(Effect.logError)))
        const id = yield* batches.submit(tasks)
        const results = Chunk.toReadonlyArray(yield* Stream.runCollect(batches.results(id)))
        const sql = yield* SqlClient.SqlClient
        const calls = yield* sql<{ task_id: string; calls: number; runner: string | null }>`
          SELECT task_id, calls, runner FROM wiz_tasks WHERE batch_id = ${id}`
        return { results, calls }
      }).pipe(Effect.scoped, Effect.provide(client(url)), Effect.timeout(capMs))
      const ms = performance.now() - t0
      const submitter = process.cpuUsage(cpu0)
      yield* Effect.forEach(running, (worker) => stopWorker(worker), { concurrency: "unbounded" })
      yield* Effect.sleep(1500) // PostgreSQL's statistics are flushed within a second
      const commitsPerTask = ((yield* commits(name)) - commits0) / tasks.length
      const perTask = (msTotal: number) => msTotal / tasks.length
      const repeated = (rows: ReadonlyArray<{ calls: number }>) => rows.reduce((n, row) => n + Math.max(0, Number(row.calls) - 1), 0)
      return {
        ms,
        workerCpuPerTask: perTask(workersCpu * 1000),
        clientCpuPerTask: perTask((submitter.user + submitter.system) / 1000),
        commitsPerTask,
        results: outcome.results,
        kills,
        inFlightAtKills,
        repeatedCalls: repeated(outcome.calls),
        repeatedNotInFlight: repeated(outcome.calls.filter((row) => !inFlight.has(row.task_id))),
        byWorker: [
          ...outcome.calls.reduce((by, row) => by.set(row.runner, (by.get(row.runner) ?? 0) + 1), new Map<string | null, number>())
            .values()
        ].sort((a, b) => b - a)
      } satisfies Run
    })
  )

const pg = Effect.gen(function*() {
  const tasks = tasksOf(pgTasks, "pg")
  const one = yield* pgRun(tasks, 1)
  const three = yield* pgRun(tasks, 3)
  console.log(`\n### PostgreSQL: ${pgTasks} tasks, ${concurrency} calls at once per worker, ${latencyMs} ms a call\n`)
  console.log(
    "| workers | records | time | speed-up | workers' CPU a task | submitter's CPU a task | transactions a task | calls repeated |\n" +
      "|---:|---:|---:|---:|---:|---:|---:|---:|"
  )
  const row = (n: number, run: Run, speedUp: string) =>
    console.log(
      `| ${n} | ${run.results.length} | ${seconds(run.ms)} | ${speedUp} | ${run.workerCpuPerTask.toFixed(1)} ms | ${
        run.clientCpuPerTask.toFixed(1)
      } ms | ${run.commitsPerTask.toFixed(1)} | ${run.repeatedCalls} |`
    )
  row(1, one, "1.00")
  row(3, three, (one.ms / three.ms).toFixed(2))
  console.log(`\ntasks by worker (3 workers): ${three.byWorker.join(", ")}`)
  console.log(`target ≥ 2.5×: ${one.ms / three.ms >= 2.5 ? "met" : "NOT met"}`)
})

const failover = withDatabase((url) =>
  Effect.gen(function*() {
    yield* Effect.scoped(Layer.build(client(url)))
    const tasks = tasksOf(Math.min(pgTasks, 600), "failover")
    const a = yield* startWorker(url)
    const b = yield* startWorker(url)
    const measured = yield* Effect.gen(function*() {
      const batches = yield* DurableBatch.DurableBatch
      const store = yield* TaskStore.make
      const id = yield* batches.submit(tasks)
      // wait until the victim is calling
      while (((yield* store.runningByRunner).get(a.address) ?? 0) === 0) yield* Effect.sleep(100)
      const sql = yield* SqlClient.SqlClient
      const held = (yield* sql<{ task_id: string }>`
        SELECT task_id FROM wiz_tasks WHERE batch_id = ${id} AND status = 'running' AND runner = ${a.address}`).map((r) => r.task_id)
      yield* stopWorker(a)
      const killedAt = performance.now()
      // the cluster counts it dead: its row unhealthy or gone (then its shards move)
      while (true) {
        const alive = yield* sql<{ n: unknown }>`
          SELECT COUNT(*) AS n FROM cluster_runners WHERE address = ${a.address} AND healthy`
        if (Number(alive[0]!.n) === 0) break
        yield* Effect.sleep(100)
      }
      const deadMs = performance.now() - killedAt
      while (true) {
        const done = yield* sql<{ n: unknown }>`
          SELECT COUNT(*) AS n FROM wiz_tasks WHERE batch_id = ${id} AND record IS NOT NULL AND task_id IN ${sql.in(held)}`
        if (Number(done[0]!.n) === held.length) break
        yield* Effect.sleep(100)
      }
      const ms = performance.now() - killedAt
      yield* Stream.runDrain(batches.results(id))
      return { held: held.length, ms, deadMs }
    }).pipe(Effect.scoped, Effect.provide(client(url)), Effect.timeout(capMs))
    yield* stopWorker(b)
    console.log(`\n### Failover: one of two workers killed with SIGKILL mid-batch\n`)
    console.log(
      `counted dead by the cluster ${seconds(measured.deadMs)} after the kill; the tasks it was calling for: ${measured.held}, ` +
        `all recorded by the other worker ${seconds(measured.ms)} after it (behind that worker's own queue: ${concurrency} calls at once)`
    )
    const { shardLockExpiration, shardLockRefreshInterval, runnerHealthCheckInterval } = PgStore.failover
    console.log(
      `(settings: PgStore.failover, heartbeat ${Duration.format(shardLockRefreshInterval)}, expiry ${Duration.format(shardLockExpiration)}, ` +
        `health check ${Duration.format(runnerHealthCheckInterval)}; target ≤ 20 s: ${measured.ms <= 20_000 ? "met" : "NOT met"})`
    )
  })
)

const chaos = Effect.gen(function*() {
  const tasks = tasksOf(pgTasks, "chaos")
  const calm = yield* pgRun(tasks, 3)
  const wild = yield* pgRun(tasks, 3, 10_000)
  const ids = wild.results.map((r) => r.id)
  const unique = new Set(ids)
  const lost = tasks.filter((t) => !unique.has(t.id)).length
  const inRecords = (run: Run) => run.results.reduce((n, r) => n + r.attempts - 1, 0)
  console.log(`\n### Chaos: 3 workers, a random one killed with SIGKILL every 10 s and started again, ${pgTasks} tasks\n`)
  console.log(
    "calls repeated: the calls the store's journal noted beyond one a task; in brackets, as the records' attempts " +
      "count them, and those for tasks no killed worker was calling for at its kill\n"
  )
  console.log("| run | records | distinct | lost | kills | calls repeated | in flight at the kills | time | ratio |")
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  const row = (label: string, run: Run, distinct: number, lostHere: number) =>
    console.log(
      `| ${label} | ${run.results.length} | ${distinct} | ${lostHere} | ${run.kills} | ${run.repeatedCalls} (${inRecords(run)}; ${run.repeatedNotInFlight}) | ${run.inFlightAtKills} | ${
        seconds(run.ms)
      } | ${(run.ms / calm.ms).toFixed(2)} |`
    )
  row("no kills", calm, new Set(calm.results.map((r) => r.id)).size, 0)
  row("kills", wild, unique.size, lost)
  console.log(
    `\ntargets: exactly one record each ${ids.length === tasks.length && lost === 0 ? "met" : "NOT met"}; ` +
      `repeated ≤ in flight ${wild.repeatedCalls <= wild.inFlightAtKills ? "met" : "NOT met"}; ≤ 1.5× ${
        wild.ms / calm.ms <= 1.5 ? "met" : "NOT met"
      }`
  )
})

const sections: ReadonlyArray<readonly [string, Effect.Effect<void, unknown>]> = [
  ["sqlite", sqlite],
  ["pg", pg],
  ["failover", failover],
  ["chaos", chaos]
]

Effect.runPromise(Effect.forEach(sections.filter(([name]) => only.has(name)), ([, run]) => run, { discard: true })).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
