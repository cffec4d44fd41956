/**
 * What `--store` does: `wiz run … --store wiz.db` (SQLite, this process alone) or `--store
 * postgres://…` (any number of processes), `wiz worker --store postgres://…` and `wiz status
 * --store …`, on the library's `DurableBatch`. Loaded only when a store is named (the commands
 * import it on demand), so the `wiz` bundle needs `better-sqlite3` beside it only then.
 *
 * `wiz run` with a store submits the input as it reads it, in parts of 512 tasks, and writes
 * each record as it is stored, on any runner, until every task has one (invalid lines get their
 * typed record as they are read): one record per input line, so the same command run again
 * after `kill -9` completes it. A regular file names its batch by its identity (device, inode,
 * size, modification time): the same file, unchanged, re-attaches to its batch, whose recorded
 * tasks are not run again; an edited file is a new batch. Stdin and pipes have no identity:
 * they are read to their end first and named by a hash of their tasks. The store is the
 * journal: `--resume` has nothing to add. The progress line is the one a run without a store
 * draws; `--events` writes the events of the tasks run in this process (all of them on SQLite,
 * its share on PostgreSQL; a task recorded by an earlier run or by another worker has its
 * record and no events), and is refused with `--no-work`. The summary's retries, breaker
 * transitions and fallbacks are counted from the same events, so they say "in this process"; with
 * `--no-work` the workers ran every task, and the summary says it did not see them instead of
 * printing a 0 (each worker prints its own when it stops).
 *
 * Workers given `--redis URL` share one token budget and one set of breakers through it (the
 * agent layer, {@link agentLayer}, takes them from the shared store), so ten workers never spend
 * more than the provider allows.
 *
 * @since 0.1.0
 */
import { isPlatformError } from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import { Cause, Chunk, Clock, Duration, Effect, Exit, Fiber, Layer, Option, Schedule, Schema, Stream } from "effect"
import { createHash } from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as AgentService from "../agent/AgentService.js"
import { type AgentTask, TaskInvalid, type TaskRecord, type TaskResult } from "../agent/AgentTask.js"
import * as DurableBatch from "../durable/DurableBatch.js"
import * as PgStore from "../durable/PgStore.js"
import * as TaskStore from "../durable/TaskStore.js"
import type { AgentEvent } from "../events/AgentEvent.js"
import * as ErrorInfo from "../events/ErrorInfo.js"
import * as Progress from "../events/Progress.js"
import * as EventsFile from "./EventsFile.js"
import * as ModelOptions from "./ModelOptions.js"
import * as OutputFile from "./OutputFile.js"
import * as ProgressLine from "./ProgressLine.js"
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
  /** The interface it listens on; none for `host`. */
  readonly bind: Option.Option<string>
  /** The port; none for a free one. */
  readonly port: Option.Option<number>
}

/** The addresses that mean every interface to a server, and no machine to a client. */
const unspecified = new Set(["0.0.0.0", "::", "[::]", "::0"])

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
 * The engine and database a `--store` names, this process's name among the runners, and what it
 * does when a signal stops it (said as it begins: the cluster holds a stopping runner's units
 * until its `entityTerminationTimeout`, in silence otherwise; a second signal finds no handler
 * and ends the process at once).
 *
 * A SQLite file is one runner (this process): nobody to hand its units to, so a stop gives its
 * calls on the wire a second to answer, and the next run makes the others again (in-memory runs
 * cut them at once). A PostgreSQL URL is a runner listening on `listen`, whose units are handed
 * over as soon as `--timeout` lets their calls on the wire end (`PgStore.handover`), or a client
 * with `listen` none.
 */
const engine = (store: string, listen: Option.Option<Listen>, timeout: Duration.Duration) =>
  Effect.gen(function*() {
    if (!PgStore.isUrl(store)) {
      const SqliteStore = yield* sqlite
      return {
        layer: SqliteStore.layer({ filename: store, shardingConfig: { entityTerminationTimeout: Duration.seconds(1) } }),
        runner: `${Os.hostname()}:${process.pid}`,
        stopping: "stopping: the calls on the wire have a second to answer, the next run makes the others again"
      }
    }
    if (Option.isNone(listen)) {
      return { layer: PgStore.layer({ url: store, runner: Option.none() }), runner: "", stopping: "stopped" }
    }
    const { host } = listen.value
    if (unspecified.has(host)) {
      return yield* usage(
        `--host ${host} is where the other workers would connect to this one, and it reaches no machine: ` +
          `give this machine's address (--host 10.0.0.5, say), and --listen ${host} to listen on every interface`
      )
    }
    const on = Option.getOrElse(listen.value.bind, () => host)
    const port = Option.isSome(listen.value.port) ? listen.value.port.value : yield* freePort(on)
    const held = yield* PgStore.terminationTimeout({ longestCall: timeout })
    return {
      layer: PgStore.layer({
        url: store,
        runner: Option.some({ host, port, listen: on }),
        longestCall: timeout
      }),
      runner: `${host}:${port}`,
      stopping: `stopping: handing its shards back once its calls on the wire are recorded (up to ${Duration.format(held)}; ` +
        "a second signal stops it at once, and the calls it cuts are made again)"
    }
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
 * The batch a regular file names: its device, inode, size and modification time, so the same
 * file, unchanged, names the same batch after a crash, and an edited one a new batch (whose
 * tasks all run). None for stdin, a pipe or a FIFO, which have no such identity.
 */
const batchOfFile = (input: string) =>
  input === "-"
    ? Effect.succeed(Option.none<string>())
    : Effect.promise(() =>
      Fs.promises.stat(input).then(
        (stats) =>
          stats.isFile()
            ? Option.some(`f-${createHash("sha256").update(JSON.stringify([stats.dev, stats.ino, stats.size, stats.mtimeMs])).digest("hex").slice(0, 16)}`)
            : Option.none<string>(),
        () => Option.none<string>()
      )
    )

/**
 * Tasks read before they are submitted, at most: a multiple of the unit size, so each part
 * starts a unit (the units of a batch are by position).
 */
const partSize = DurableBatch.defaults.unitSize * 64

/**
 * Follows the events of the agent that works here into `onEvents` (the summary, the progress
 * line, the `--events` file: the tasks run in this process); `settle` waits until every task it
 * saw start has finished (a task whose unit left this runner before it called ends without one:
 * after a second without events the wait ends), then stops.
 */
const followEvents = <E>(
  agent: AgentService.AgentService.Service,
  onEvents: (events: Chunk.Chunk<AgentEvent>) => Effect.Effect<void, E>
) =>
  Effect.gen(function*() {
    const open = new Set<string>()
    let lastAt = 0
    const fiber = yield* (yield* agent.subscribe).pipe(
      Stream.runForEachChunk((chunk) =>
        Effect.zipRight(
          onEvents(chunk),
          Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.sync(() => {
              lastAt = now
              for (const event of chunk) {
                if (event._tag === "TaskStarted") open.add(event.taskId)
                else if (event._tag === "TaskFinished") open.delete(event.taskId)
              }
            }))
        )
      ),
      // interruptible wherever it is forked: a fiber forked while a layer is built, or from a
      // finalizer, would otherwise be uninterruptible, and settle could never stop it
      Effect.interruptible,
      Effect.forkScoped
    )
    const failed: Effect.Effect<never, E> = Effect.flatMap(Fiber.await(fiber), (exit) =>
      Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause) ? Effect.failCause(exit.cause) : Effect.never)
    const quiet = Effect.map(Clock.currentTimeMillis, (now) => open.size === 0 || now - lastAt >= 1000)
    return {
      guard: <A, E, R>(run: Effect.Effect<A, E, R>) => Effect.raceFirst(run, failed),
      // interruptible for the same reason: run from a finalizer, the race's loser could not be stopped
      settle: Effect.interruptible(Effect.raceFirst(
        Effect.zipRight(
          Effect.repeat(quiet, { schedule: Schedule.spaced("50 millis"), until: (done) => done }),
          Fiber.interrupt(fiber)
        ),
        failed
      ))
    }
  })

/**
 * `wiz run … --store STORE`: submit the input's tasks as a batch, part by part as they are read,
 * work on it unless `--no-work` (PostgreSQL only), and write every record as it is stored, with
 * the progress line of a run without a store, and `--events` for the tasks run here.
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
  if (options.noWork && !PgStore.isUrl(options.store)) {
    return yield* usage("--no-work needs a PostgreSQL store (postgres://...): a SQLite store is worked on by the process that holds it")
  }
  if (options.noWork && Option.isSome(options.events)) {
    return yield* usage("--events with --store writes the events of the tasks run in this process: with --no-work it runs none")
  }
  if (yield* OutputFile.isInput(options.input, options.output)) {
    return yield* usage(`the output is the input "${options.input}": write the records to another file`)
  }
  if (Option.isSome(options.events)) yield* EventsFile.check(options.events.value, options.input, options.output)
  const agent = yield* agentLayer(options, {
    ...(options.coalesce ? { coalesce: true } : {}),
    ...Option.match(options.memoTtl, { onNone: () => ({}), onSome: (timeToLive) => ({ memo: { timeToLive } }) })
  })
  const stdio = yield* Stdio
  const stats = yield* Summary.makeStats
  const startedAt = yield* Clock.currentTimeMillis
  const summarise = Effect.gen(function*() {
    const summary = yield* stats.summary((yield* Clock.currentTimeMillis) - startedAt)
    yield* stdio.stderr(Summary.render(summary, { events: options.noWork ? "none" : "here" }))
    return summary
  })
  const { layer: store, runner, stopping } = yield* engine(
    options.store,
    options.noWork ? Option.none() : Option.some(options.listen),
    options.timeout
  )
  // the worker's agent is in context too, for the events of the tasks it runs
  const work = options.noWork ? Layer.empty : DurableBatch.worker({ runner }).pipe(Layer.provideMerge(agent))

  yield* Effect.gen(function*() {
    const input = yield* TaskSource.open(options.input)
    const output = Option.isSome(options.output)
      ? yield* OutputFile.open(options.output.value, "truncate", OutputFile.none)
      : { sink: yield* RecordSink.stdout, commit: Effect.void }
    // the agent of the work here (none with --no-work, which --events is refused with)
    const here = yield* Effect.serviceOption(AgentService.AgentService)
    const file = Option.isSome(options.events) ? Option.some(yield* EventsFile.open(options.events.value)) : Option.none()
    // with --no-work, every task runs in a worker: the line knows their outcomes only
    const progress = yield* Progress.make({ outcomesOnly: options.noWork })
    // what the tasks run here did: their retries and the breakers' transitions in the summary and
    // on the progress line (which counts tasks from the records, not from these events)
    const seen = (chunk: Chunk.Chunk<AgentEvent>) =>
      Effect.zipRight(
        Effect.forEach(chunk, (event) =>
          Effect.zipRight(
            stats.recordEvent(event),
            event._tag === "RetryScheduled" || event._tag === "BreakerTransition" ? progress.record(event) : Effect.void
          ), { discard: true }),
        Option.match(file, { onNone: () => Effect.void, onSome: (file) => file.write(Chunk.toReadonlyArray(chunk)) })
      )
    const events = Option.isSome(here) ? Option.some(yield* followEvents(here.value, seen)) : Option.none()
    const screen = options.progress ? Option.some(yield* ProgressLine.draw(progress)) : Option.none()
    // the calls on the wire here, as the line of a run without a store shows them
    const reportFlow = Option.match(here, {
      onNone: () => Effect.void,
      onSome: (agent) => Effect.flatMap(agent.flow, (flow) => progress.setFlow({ calls: flow.active }))
    })
    if (options.progress) yield* Effect.forkScoped(Effect.repeat(reportFlow, Schedule.spaced("250 millis")))
    const total = Effect.flatMap(input.total, Option.match({
      onNone: () => Effect.void,
      onSome: ({ estimated, lines }) => progress.setTotal(lines, { estimated })
    }))
    const batches = yield* DurableBatch.DurableBatch
    const fileBatch = yield* batchOfFile(options.input)
    // a record on the terminal the progress line is drawn on goes above it, never into it
    const onScreen = Option.filter(screen, () => Option.isNone(options.output) && stdio.stdoutIsTTY)
    const write = (record: TaskRecord) =>
      Effect.uninterruptible(Option.match(onScreen, {
        onNone: () => output.sink.write(record),
        onSome: (line) => Effect.catchIf(line.around(output.sink.write(record)), isPlatformError, Effect.die)
      }))
    const entries = TaskSource.entries(input.lines.pipe(Stream.mapChunksEffect((chunk) => Effect.as(total, chunk))))
    const invalid = (error: TaskSource.Entry & { readonly _tag: "Invalid" }) =>
      Effect.all([
        write(new TaskInvalid({ line: error.error.line, error: ErrorInfo.fromError(error.error) })),
        stats.recordInvalid,
        progress.invalid
      ], { discard: true })
    const record = (result: TaskResult) =>
      Effect.all([write(result), stats.recordResult(result), result.status === "succeeded" ? progress.succeeded : progress.failed], {
        discard: true
      })

    let submitted = false
    // the tasks submitted so far: the position of the next part in the batch
    let count = 0
    // with --no-work and no worker alive, the batch waits: say so, or the run looks stuck
    const noWorker = Effect.flatMap(TaskStore.make, (store) => store.runners).pipe(
      Effect.flatMap((runners) =>
        runners.some((r) => r.healthy)
          ? Effect.void
          : stdio.stderr(`wiz: no worker is working on this store yet: the batch waits for one (wiz worker --store ...)\n`)
      )
    )
    const announce = (batchId: string) =>
      Effect.zipRight(
        stdio.stderr(`wiz: batch ${batchId} in ${redact(options.store)}${options.noWork ? "" : `, worked on here as ${runner}`}\n`),
        options.noWork ? noWorker : Effect.void
      )
    const results = (batchId: string) =>
      Stream.runForEach(batches.results(batchId, { submitted: Effect.sync(() => submitted) }), record)
    const guard = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Option.match(events, { onNone: () => effect, onSome: (follower) => follower.guard(effect) })

    if (Option.isSome(fileBatch)) {
      // a regular file: submitted in parts as it is read, its records written meanwhile
      const batchId = fileBatch.value
      // the batch is there before its first part, for its results to be read from the start
      yield* batches.submit([], { id: batchId })
      yield* announce(batchId)
      const submit = entries.pipe(
        Stream.tap((entry) => (entry._tag === "Invalid" ? invalid(entry) : Effect.void)),
        Stream.filterMap((entry) => (entry._tag === "Task" ? Option.some(entry.task) : Option.none())),
        Stream.grouped(partSize),
        Stream.runForEach((part) =>
          Effect.flatMap(batches.submit(Chunk.toReadonlyArray(part), { id: batchId, from: count }), () =>
            Effect.sync(() => {
              count += Chunk.size(part)
            }))
        ),
        Effect.ensuring(Effect.sync(() => {
          submitted = true
        }))
      )
      yield* guard(Effect.all([submit, results(batchId)], { concurrency: 2, discard: true }))
    } else {
      // stdin or a pipe: no identity, so the batch is named by its tasks, read to the end first
      const tasks: Array<AgentTask> = []
      yield* Stream.runForEach(entries, (entry) =>
        entry._tag === "Invalid" ? invalid(entry) : entry._tag === "Task" ? Effect.sync(() => tasks.push(entry.task)) : Effect.void)
      const batchId = yield* batches.submit(tasks)
      submitted = true
      yield* announce(batchId)
      yield* guard(results(batchId))
    }
    yield* total
    // the last line drawn says what the end is: no call on the wire
    if (options.progress) yield* reportFlow
    if (Option.isSome(events)) yield* events.value.settle
    if (Option.isSome(file)) yield* file.value.commit
    yield* output.commit
  }).pipe(
    Effect.scoped,
    Effect.onInterrupt(() => stdio.stderr(`wiz: ${stopping}; the same command goes on with the batch\n`)),
    Effect.provide(Layer.merge(DurableBatch.layer(), work).pipe(Layer.provideMerge(store))),
    // stopped by a signal, the summary of what was written, once the work here has stopped
    Effect.onInterrupt(() => summarise)
  )
  return yield* summarise
})

/**
 * `wiz worker --store postgres://…`: work on every batch of the store until stopped; SIGTERM
 * lets the calls on the wire finish and be recorded, starts no new one, hands its shards back
 * (their units' other tasks run elsewhere), then prints what it did: its tasks, their attempts,
 * retries, breaker transitions and fallbacks (which `wiz run --no-work` cannot see).
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
  const { layer: store, runner, stopping } = yield* engine(options.store, Option.some(options.listen), options.timeout)
  const stdio = yield* Stdio
  // what it did, from its agent's events: its tasks, their calls, retries, transitions, fallbacks
  const stats = yield* Summary.makeStats
  const tasks = { succeeded: 0, failed: 0, attempts: 0 }
  const tally = (events: Chunk.Chunk<AgentEvent>) =>
    Effect.forEach(events, (event) =>
      event._tag === "TaskFinished"
        ? Effect.sync(() => {
          tasks[event.status]++
          tasks.attempts += event.attempts
        })
        : stats.recordEvent(event), { discard: true })
  // its stop line, once its calls on the wire are recorded and its shards handed back: the
  // worker needs this layer, so it is released after the worker's
  const stopLine = Layer.scopedDiscard(Effect.gen(function*() {
    const follower = yield* followEvents(yield* AgentService.AgentService, tally)
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        follower.settle,
        Effect.flatMap(stats.summary(0), (done) =>
          stdio.stderr(
            `wiz: worker ${runner} stopped after ${tasks.succeeded + tasks.failed} tasks (${tasks.succeeded} succeeded, ` +
              `${tasks.failed} failed): ${tasks.attempts} attempts, ${done.retries} retries, ` +
              `${done.breakerTransitions} breaker transitions, ${done.fallbacks} fallbacks\n`
          ))
      )
    )
  }))
  yield* Effect.zipRight(
    stdio.stderr(`wiz: worker ${runner} on ${redact(options.store)}; SIGTERM stops it\n`),
    Effect.never
  ).pipe(
    Effect.onInterrupt(() => stdio.stderr(`wiz: worker ${runner} ${stopping}\n`)),
    Effect.provide(
      DurableBatch.worker({ runner }).pipe(
        Layer.provide(Layer.merge(agent, stopLine.pipe(Layer.provide(agent)))),
        Layer.provideMerge(store)
      )
    )
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
  // reading a SQLite store would make an empty one where a path was mistyped
  const fs = yield* FileSystem.FileSystem
  if (!PgStore.isUrl(options.store) && !(yield* Effect.orElseSucceed(fs.exists(options.store), () => false))) {
    return yield* usage(`no store at "${options.store}" (wiz run FILE --store ${options.store} makes one)`)
  }
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
