/**
 * What `--store` does: `wiz run … --store wiz.db` (SQLite, this process alone) or `--store
 * postgres://…` (any number of processes), `wiz worker --store postgres://…` and `wiz status
 * --store …`, on the library's `DurableBatch`. Loaded only when a store is named (the commands
 * import it on demand), so the `wiz` bundle needs `better-sqlite3` beside it only then.
 *
 * `wiz run` with a store reads the whole input first (the batch's id is a hash of its tasks, so
 * the same file names the same batch after a crash), writes the invalid lines' records, submits
 * the tasks (those the store has recorded are not run again), then writes each record as it is
 * stored, on any runner, until every task has one: the output is rewritten whole each time, one
 * record per input line, so the same command run again after `kill -9` completes it. The store
 * is the journal: `--resume` has nothing to add.
 *
 * Workers given `--redis URL` share one token budget and one set of breakers through it (the
 * agent layer, {@link agentLayer}, takes them from the shared store), so ten workers never spend
 * more than the provider allows.
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Layer, Option, Schema, Stream } from "effect"
import * as Net from "node:net"
import * as Os from "node:os"
import { type AgentTask, TaskInvalid } from "../agent/AgentTask.js"
import * as DurableBatch from "../durable/DurableBatch.js"
import * as PgStore from "../durable/PgStore.js"
import * as TaskStore from "../durable/TaskStore.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import * as ModelOptions from "./ModelOptions.js"
import * as OutputFile from "./OutputFile.js"
import * as RecordSink from "./RecordSink.js"
import type { RunOptions } from "./RunCommand.js"
import { Stdio } from "./Stdio.js"
import * as Summary from "./Summary.js"
import * as TaskSource from "./TaskSource.js"
import { usage } from "./UsageError.js"

/**
 * A SQLite store cannot be opened: `better-sqlite3`, a native module, is not installed where
 * `wiz` can require it.
 *
 * @since 0.1.0
 * @category errors
 */
export class SqliteUnavailable extends Schema.TaggedError<SqliteUnavailable>()("SqliteUnavailable", {
  reason: Schema.String
}) {
  override get message(): string {
    return `a SQLite store needs the native module better-sqlite3 beside wiz (npm install better-sqlite3 ` +
      `where wiz-effect is installed, or -g beside a global wiz): ${this.reason}`
  }
}

/** The SQLite store, loaded on demand: it requires the native `better-sqlite3`. */
const sqlite = Effect.tryPromise({
  try: () => import("../durable/SqliteStore.js"),
  catch: (cause) => new SqliteUnavailable({ reason: cause instanceof Error ? cause.message.split("\n")[0]! : String(cause) })
})

/**
 * Where this process listens for the other runners of a PostgreSQL store.
 *
 * @since 0.1.0
 * @category models
 */
export interface Listen {
  /** The host the other runners reach this one at. */
  readonly host: string
  /** The port; none for a free one. */
  readonly port: Option.Option<number>
}

/** A free port on `host`, from the system. */
const freePort = (host: string) =>
  Effect.async<number, Error>((resume) => {
    const server = Net.createServer()
    server.once("error", (error) => resume(Effect.fail(error)))
    server.listen(0, host, () => {
      const address = server.address()
      server.close(() => resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0)))
    })
  }).pipe(Effect.orDie)

/**
 * The engine and database a `--store` names, and this process's name among the runners: a
 * SQLite file is one runner (this process); a PostgreSQL URL is a runner listening on `listen`,
 * or a client with `listen` none.
 */
const engine = (store: string, listen: Option.Option<Listen>) =>
  Effect.gen(function*() {
    if (!PgStore.isUrl(store)) {
      const SqliteStore = yield* sqlite
      return { layer: SqliteStore.layer({ filename: store }), runner: `${Os.hostname()}:${process.pid}` }
    }
    if (Option.isNone(listen)) return { layer: PgStore.layer({ url: store, runner: Option.none() }), runner: "" }
    const { host } = listen.value
    const port = Option.isSome(listen.value.port) ? listen.value.port.value : yield* freePort(host)
    return { layer: PgStore.layer({ url: store, runner: Option.some({ host, port }) }), runner: `${host}:${port}` }
  })

/**
 * The agent the options describe, its model calls noted in the store, its budgets and breakers
 * shared through `--redis` when given.
 */
const agentLayer = (
  options: ModelOptions.AgentOptions & { readonly concurrency: number | "adaptive" },
  service: Parameters<typeof ModelOptions.layer>[1] = {}
) => ModelOptions.layer(options, { concurrency: options.concurrency, ...service }, { around: DurableBatch.journal })

/**
 * `wiz run … --store STORE`: submit the input's tasks as a batch, work on it unless `--no-work`
 * (PostgreSQL only), and write every record as it is stored.
 *
 * @since 0.1.0
 * @category handlers
 */
export const run = Effect.fn("DurableRun.run")(function*(options: Omit<RunOptions, "store"> & {
  readonly store: string
  readonly noWork: boolean
  readonly listen: Listen
}) {
  if (options.resume || options.retryFailed) {
    return yield* usage("--resume and --retry-failed read an output file; with --store the store is the journal: run the same command again")
  }
  if (Option.isSome(options.events)) return yield* usage("--events is not available with --store")
  if (options.noWork && !PgStore.isUrl(options.store)) {
    return yield* usage("--no-work needs a PostgreSQL store (postgres://...): a SQLite store is worked on by the process that holds it")
  }
  if (yield* OutputFile.isInput(options.input, options.output)) {
    return yield* usage(`the output is the input "${options.input}": write the records to another file`)
  }
  const agent = yield* agentLayer(options, {
    ...(options.coalesce ? { coalesce: true } : {}),
    ...Option.match(options.memoTtl, { onNone: () => ({}), onSome: (timeToLive) => ({ memo: { timeToLive } }) })
  })
  const stdio = yield* Stdio
  const stats = yield* Summary.makeStats
  const startedAt = yield* Clock.currentTimeMillis
  const { layer: store, runner } = yield* engine(options.store, options.noWork ? Option.none() : Option.some(options.listen))
  const work = options.noWork ? Layer.empty : DurableBatch.worker({ runner }).pipe(Layer.provide(agent))

  yield* Effect.gen(function*() {
    const input = yield* TaskSource.open(options.input)
    const output = Option.isSome(options.output)
      ? yield* OutputFile.open(options.output.value, "truncate", OutputFile.none)
      : { sink: yield* RecordSink.stdout, commit: Effect.void }
    const tasks: Array<AgentTask> = []
    yield* TaskSource.entries(input.lines).pipe(Stream.runForEach(TaskSource.Entry.$match({
      Task: ({ task }) => Effect.sync(() => tasks.push(task)),
      Invalid: ({ error }) =>
        Effect.zipRight(output.sink.write(new TaskInvalid({ line: error.line, error: ErrorInfo.fromError(error) })), stats.recordInvalid),
      Resumed: () => Effect.void
    })))
    const batches = yield* DurableBatch.DurableBatch
    const batchId = yield* batches.submit(tasks)
    yield* stdio.stderr(`wiz: batch ${batchId}: ${tasks.length} tasks in ${options.store}${options.noWork ? "" : `, worked on here as ${runner}`}\n`)
    yield* batches.results(batchId).pipe(
      Stream.runForEach((result) => Effect.uninterruptible(Effect.zipRight(output.sink.write(result), stats.recordResult(result))))
    )
    yield* output.commit
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.merge(DurableBatch.layer(), work).pipe(Layer.provideMerge(store)))
  )
  const summary = yield* stats.summary((yield* Clock.currentTimeMillis) - startedAt)
  yield* stdio.stderr(Summary.render(summary))
  return summary
})

/**
 * `wiz worker --store postgres://…`: work on every batch of the store until stopped; SIGTERM
 * lets the calls on the wire finish and be recorded, starts no new one, and hands its shards
 * back (their units' other tasks run elsewhere).
 *
 * @since 0.1.0
 * @category handlers
 */
export const worker = Effect.fn("DurableRun.worker")(function*(options: ModelOptions.AgentOptions & {
  readonly store: string
  readonly concurrency: number | "adaptive"
  readonly listen: Listen
}) {
  if (!PgStore.isUrl(options.store)) {
    return yield* usage("wiz worker needs a PostgreSQL store (postgres://...): a SQLite store is worked on by the wiz run that holds it")
  }
  const agent = yield* agentLayer(options)
  const { layer: store, runner } = yield* engine(options.store, Option.some(options.listen))
  const stdio = yield* Stdio
  yield* Effect.gen(function*() {
    yield* stdio.stderr(`wiz: worker ${runner} on ${redact(options.store)}; SIGTERM stops it\n`)
    return yield* Effect.never
  }).pipe(
    Effect.onInterrupt(() => stdio.stderr(`wiz: worker ${runner} stopping: handing its shards back\n`)),
    Effect.provide(DurableBatch.worker({ runner }).pipe(Layer.provide(agent), Layer.provideMerge(store)))
  )
})

/** A URL without its password. */
const redact = (url: string): string => url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1:***@")

const formatState = (state: TaskStore.BatchState, running: number): string =>
  `  ${state.batchId}  ${String(state.total).padStart(6)} tasks  ${String(state.succeeded).padStart(6)} succeeded  ` +
  `${String(state.failed).padStart(4)} failed  ${String(running).padStart(4)} running  ${String(state.queued).padStart(6)} queued`

/**
 * `wiz status --store STORE`: the store's batches and, for PostgreSQL, its workers. A SQLite
 * store held by a running `wiz run` cannot be read meanwhile (it is refused with the holder's
 * lock).
 *
 * @since 0.1.0
 * @category handlers
 */
export const status = Effect.fn("DurableRun.status")(function*(options: { readonly store: string }) {
  const stdio = yield* Stdio
  const db = PgStore.isUrl(options.store) ? PgStore.database(options.store, 2) : (yield* sqlite).database(options.store)
  const text = yield* Effect.gen(function*() {
    const store = yield* TaskStore.make
    const batches = yield* store.batches
    const runners = yield* store.runners
    const running = yield* store.runningByRunner
    const lines = [`store ${redact(options.store)}`, `batches (${batches.length}):`]
    for (const state of batches) lines.push(formatState(state, state.running))
    lines.push(`workers (${runners.length}):`)
    for (const r of runners) {
      const age = Duration.format(Duration.millis(Math.round(r.ageSeconds * 10) * 100))
      lines.push(
        `  ${r.address.padEnd(22)} ${r.healthy ? "healthy" : "unhealthy"}  heartbeat ${age} ago  ` +
          `${running.get(r.address) ?? 0} tasks running`
      )
    }
    return lines.join("\n") + "\n"
  }).pipe(Effect.provide(db))
  yield* stdio.stdout(text)
})
