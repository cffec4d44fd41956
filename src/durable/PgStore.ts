/**
 * The shared store: durable batches on one PostgreSQL database, worked on by any number of
 * processes on any number of machines. Each working process is a cluster runner: it listens on
 * a socket of its own (`runner`: the host and port the others reach it at), takes its share of
 * the shards (PostgreSQL advisory locks), and runs the units of its shards; a process that only
 * submits and reads (`runner` none) is a client of the cluster.
 *
 * Failover: the units of a runner that dies with `kill -9` move to the others once its shards
 * are free and it is no longer counted among the live runners. With the cluster's defaults that
 * is up to ~35 s (a runner counts as live until its heartbeat is `shardLockExpiration`, 35 s,
 * old; the health check that can drop it earlier runs once a minute, on one runner). {@link
 * failover} tunes it: the health check every 5 s, assignments refreshed every second, heartbeats
 * every 5 s, a runner gone after 15 s without one. The cluster's health check is a singleton, so
 * when the runner killed was the one running it nobody checked until the dead runner's heartbeat
 * was 15 s old; so every runner here also tries each other runner's address every 2 s, and one
 * that refuses the connection (nothing listens there) is counted unhealthy at once. Measured on a
 * quiet 2-core machine (bench/durable.ts): a killed worker counted dead 0.4 to 1.8 s after the
 * kill (10 to 15 s when the singleton died with it). The heartbeat interval is also the deadline
 * of the shard lock refresh: a live runner that misses it for want of CPU releases every shard at
 * once, interrupting its units mid-call (31 calls made twice in a run without kills with
 * heartbeats of 3 s), hence not shorter. A runner stopped with SIGTERM lets its calls on the wire
 * finish, hands its shards back as it closes, and its units move at once.
 *
 * Handing over: a unit whose shard moves (a runner joined, or this one stops) stops its tasks
 * before they call and waits for its calls on the wire, and the cluster holds it until its
 * `entityTerminationTimeout` (15 s by default) has passed. Given `longestCall` (the agent's
 * attempt timeout; `wiz` gives its `--timeout`), that wait is {@link handover} of it: a unit is
 * handed over as soon as its calls can have ended, and none is cut mid-call.
 *
 * PostgreSQL drivers: `pg` 8 (what `@effect/sql-pg` 0.53 is built on; it warns of a `pg` 9
 * change it does not make yet).
 *
 * @example
 * ```ts
 * import { Option } from "effect"
 * import * as PgStore from "wiz-effect/durable/PgStore"
 *
 * // a working process listening on every interface, reachable by the others at 10.0.0.5:34431,
 * // whose model calls time out at 30 s
 * const store = PgStore.layer({
 *   url: "postgres://wiz@db/wiz",
 *   runner: Option.some({ host: "10.0.0.5", port: 34431, listen: "0.0.0.0" }),
 *   longestCall: "30 seconds"
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as ClusterWorkflowEngine from "@effect/cluster/ClusterWorkflowEngine"
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as RunnerStorage from "@effect/cluster/RunnerStorage"
import * as Runners from "@effect/cluster/Runners"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SocketRunner from "@effect/cluster/SocketRunner"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import { layerClientProtocol, layerSocketServer } from "@effect/platform-node-shared/NodeClusterSocket"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import type { WorkflowEngine } from "@effect/workflow/WorkflowEngine"
import { Config, ConfigProvider, Context, Duration, Effect, Equal, Layer, Option, Redacted, Schedule } from "effect"
import { connect } from "node:net"
import type { ConfigError, Scope } from "effect"
import { StoreError } from "./TaskStore.js"

/**
 * The cluster settings that bound failover after a `kill -9` (see the module's notes).
 *
 * @since 0.1.0
 * @category defaults
 */
export const failover = {
  shardLockRefreshInterval: Duration.seconds(5),
  shardLockExpiration: Duration.seconds(15),
  runnerHealthCheckInterval: Duration.seconds(5),
  refreshAssignmentsInterval: Duration.seconds(1),
  entityMessagePollInterval: Duration.seconds(2)
} as const

/**
 * The cluster's `entityTerminationTimeout` for calls that take at most `longestCall` on the
 * wire: that, and a second for the unit to record what they answered.
 *
 * @example
 * ```ts
 * import * as PgStore from "wiz-effect/durable/PgStore"
 *
 * PgStore.handover("2 seconds") // 3 seconds
 * ```
 *
 * @since 0.1.0
 * @category defaults
 */
export const handover = (longestCall: Duration.DurationInput): Duration.Duration =>
  Duration.sum(longestCall, Duration.seconds(1))

/** `ENTITY_TERMINATION_TIMEOUT` when the environment sets it, read as the cluster reads it. */
const terminationFromEnv = Config.option(Config.duration("entityTerminationTimeout")).pipe(
  Effect.withConfigProvider(ConfigProvider.fromEnv().pipe(ConfigProvider.constantCase))
)

/**
 * How long a stopping runner of {@link layer} with these options holds a unit for its calls on
 * the wire (the cluster's `entityTerminationTimeout`): `shardingConfig`'s, else
 * `ENTITY_TERMINATION_TIMEOUT`'s, else {@link handover} of a finite `longestCall`, else the
 * cluster's 15 s. What a stop can be told it waits for.
 *
 * @since 0.1.0
 * @category constructors
 */
export const terminationTimeout = (
  options: Pick<Options, "longestCall" | "shardingConfig">
): Effect.Effect<Duration.Duration, ConfigError.ConfigError> =>
  options.shardingConfig?.entityTerminationTimeout !== undefined
    ? Effect.succeed(Duration.decode(options.shardingConfig.entityTerminationTimeout))
    : Effect.map(terminationFromEnv, (fromEnv) =>
      Option.getOrElse(fromEnv, () =>
        options.longestCall !== undefined && Duration.isFinite(Duration.decode(options.longestCall))
          ? handover(options.longestCall)
          : Duration.decode(ShardingConfig.defaults.entityTerminationTimeout)))

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** `postgres://user@host:port/database`. */
  readonly url: string
  /**
   * Where the other runners reach this one; none for a process that does no work. It listens at
   * `host` too, unless `listen` names the interface to listen on (`0.0.0.0` for every one, as in
   * a container, with `host` the address the others connect to).
   */
  readonly runner: Option.Option<{ readonly host: string; readonly port: number; readonly listen?: string }>
  /**
   * The longest a model call may be on the wire: the agent's attempt `timeout`. A unit whose
   * shard moves (a runner joined, or this one stops with SIGTERM) waits for its calls on the
   * wire, and the cluster waits for the unit up to its `entityTerminationTimeout` before it cuts
   * them: with this given, that timeout is {@link handover} of it, so no call is cut and made
   * again, and a unit whose calls are short is handed over soon. Without it, or when
   * `ENTITY_TERMINATION_TIMEOUT` is set, the cluster's own (15 s by default).
   */
  readonly longestCall?: Duration.DurationInput
  /** The cluster's settings, over {@link failover}, `longestCall` and its defaults. */
  readonly shardingConfig?: Partial<ShardingConfig.ShardingConfig["Type"]>
  /** Connections in the pool (10). */
  readonly maxConnections?: number
}

/**
 * The engine and the database on PostgreSQL: a runner (with `runner`) or a client.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<WorkflowEngine | SqlClient.SqlClient, StoreError | ConfigError.ConfigError> => {
  const config = Layer.unwrapEffect(Effect.map(terminationTimeout(options), (entityTerminationTimeout) =>
    ShardingConfig.layerFromEnv({
      ...failover,
      ...Option.match(options.runner, {
        onNone: () => ({}),
        onSome: ({ host, listen, port }) => ({
          runnerAddress: Option.some(RunnerAddress.make(host, port)),
          ...(listen === undefined ? {} : { runnerListenAddress: Option.some(RunnerAddress.make(listen, port)) })
        })
      }),
      entityTerminationTimeout,
      ...options.shardingConfig
    })
  ))
  // NodeClusterSocket.layer, without its Kubernetes health check (whose HTTP client would take
  // undici into the wiz bundle)
  const runners = Option.isSome(options.runner)
    ? Layer.provide(SocketRunner.layer, [layerSocketServer, layerClientProtocol]).pipe(
      Layer.provide(RunnerHealth.layerPing.pipe(Layer.provide(Runners.layerRpc), Layer.provide(layerClientProtocol)))
    )
    : Layer.provide(SocketRunner.layerClientOnly, layerClientProtocol)
  // the cluster's two storages, built under one lock; one build for the cluster and the watch
  // (a layer is built once per build, by reference)
  const storages = Layer.orDie(oneAtATime(options.url, Layer.merge(SqlRunnerStorage.layer, SqlMessageStorage.layer))).pipe(
    Layer.provide(config)
  )
  const watch = Option.match(options.runner, {
    onNone: () => Layer.empty,
    onSome: ({ host, port }) => Layer.scopedDiscard(watchRefused(RunnerAddress.make(host, port))).pipe(Layer.provide(storages))
  })
  const cluster = runners.pipe(
    Layer.provideMerge(storages),
    Layer.provide(config),
    Layer.provide(RpcSerialization.layerMsgPack),
    Layer.merge(watch)
  )
  const db = database(options.url, options.maxConnections)
  return ClusterWorkflowEngine.layer.pipe(
    Layer.provideMerge(cluster),
    Layer.provideMerge(db),
    Layer.mapError((error) =>
      error._tag === "SocketServerError"
        ? new StoreError({
          operation: "listen",
          // the error's own message is its reason alone ("Open"); its cause says why
          message: `cannot listen for the other runners${
            Option.match(options.runner, { onNone: () => "", onSome: ({ host, listen, port }) => ` at ${listen ?? host}:${port}` })
          }: ${error.cause instanceof Error ? error.cause.message : error.message}`
        })
        : error
    )
  )
}

/**
 * `layer` built while this process holds a PostgreSQL advisory lock. The cluster's storages
 * create their tables as they are built, and its migrator's `CREATE TABLE` is not safe against
 * processes starting together on an empty database: all but one failed with a duplicate key in
 * `pg_type`, and a `wiz worker` started with two others exited at once.
 */
const oneAtATime = <A, E, R>(url: string, layer: Layer.Layer<A, E, R>): Layer.Layer<A, E | StoreError, R> =>
  Layer.scopedContext(
    Effect.flatMap(Effect.scope, (scope) => Effect.scoped(Effect.zipRight(lockTables(url), Layer.buildWithScope(layer, scope))))
  )

/**
 * Holds {@link tablesLock} until the scope closes, on a connection of its own (not the pool's,
 * which the build under it may need). Tried every 50 ms rather than waited for in the server,
 * so the wait can be interrupted.
 */
const lockTables = (url: string): Effect.Effect<void, StoreError, Scope.Scope> =>
  Effect.gen(function*() {
    const connection = yield* Effect.flatMap(Layer.build(database(url, 1)), (context) => Context.get(context, SqlClient.SqlClient).reserve)
    const tryLock = Effect.acquireRelease(
      Effect.map(connection.execute("SELECT pg_try_advisory_lock($1) AS locked", [tablesLock], undefined), (rows) => rows[0]?.locked === true),
      // a connection that cannot unlock is broken, and the server frees its locks with it
      (locked) =>
        locked
          ? Effect.catchAll(connection.executeRaw("SELECT pg_advisory_unlock($1)", [tablesLock]), (error) =>
            Effect.logWarning("wiz: the lock on the cluster's tables was not released", error))
          : Effect.void
    )
    yield* Effect.repeat(tryLock, { until: (locked) => locked, schedule: Schedule.spaced(Duration.millis(50)) })
  }).pipe(Effect.catchTag("SqlError", (error) => Effect.fail(StoreError.fromSql("lock")(error))))

/** The advisory lock the cluster's tables are created under. */
const tablesLock = 2026120721

/**
 * Whether nothing listens at `address` any more: a TCP connection refused at once (a live
 * process's listening socket is answered by the kernel, even while its event loop is busy).
 * Not refused within a second, or any other error: not known dead.
 */
const refused = (address: RunnerAddress.RunnerAddress): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    const socket = connect({ host: address.host, port: address.port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(false))
    })
    socket.once("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed(error.code === "ECONNREFUSED")))
    return Effect.sync(() => socket.destroy())
  }).pipe(Effect.timeoutTo({ duration: Duration.seconds(1), onSuccess: (dead) => dead, onTimeout: () => false }))

/**
 * Every 2 seconds, this runner tells the store that another runner whose address refuses
 * connections is unhealthy, so every runner moves its shards at its next assignment refresh. The
 * cluster's own health check does the same but is one of its singletons: when the runner killed
 * was the one running it, nobody checked until the dead runner's heartbeat was
 * `shardLockExpiration` old (failover measured at 10 to 15 s in that case on a quiet machine, ~1 s
 * otherwise). Not `RunnerHealth.isAlive`, which also says false of a live runner too busy to
 * answer its ping in time: a refused connection is the one answer that only a dead runner gives.
 */
const watchRefused = (self: RunnerAddress.RunnerAddress) =>
  Effect.gen(function*() {
    const storage = yield* RunnerStorage.RunnerStorage
    const check = Effect.flatMap(storage.getRunners, (runners) =>
      Effect.forEach(
        runners,
        ([runner, healthy]) =>
          !healthy || Equal.equals(runner.address, self)
            ? Effect.void
            : Effect.flatMap(refused(runner.address), (dead) => (dead ? storage.setRunnerHealth(runner.address, false) : Effect.void)),
        { concurrency: 10, discard: true }
      ))
    yield* check.pipe(
      Effect.catchAllCause((cause) => Effect.logDebug("wiz: the runner watch could not read the store", cause)),
      Effect.repeat(Schedule.spaced(Duration.seconds(2))),
      Effect.forkScoped
    )
  })

/**
 * The database alone, without the engine (to read a store's state).
 *
 * @since 0.1.0
 * @category layers
 */
export const database = (url: string, maxConnections = 10): Layer.Layer<SqlClient.SqlClient, StoreError> =>
  PgClient.layer({ url: Redacted.make(url), maxConnections }).pipe(
    Layer.mapError(StoreError.fromSql("connect"))
  )

/**
 * Whether a store address names PostgreSQL (`postgres://`, `postgresql://`) rather than a file.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isUrl = (store: string): boolean => /^postgres(ql)?:\/\//.test(store)
