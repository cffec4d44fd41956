/**
 * The `SharedStore` on Redis: every process that provides it with the same Redis, provider,
 * API key and `prefix` shares each model's token budget and circuit breaker, so N replicas (or
 * N `wiz run --redis` processes) spend one provider quota together instead of N of them, and a
 * breaker one of them trips is open for all.
 *
 * - Budgets (`RedisBudget`): one Lua script per reservation takes every dimension or none, on
 *   Redis's own `TIME`; one more settles it with the usage and adopts the provider's report.
 *   Two round trips per model call; a ticket queue in Redis so large reservations are not
 *   starved; keys that expire; refunds capped at capacity.
 * - Breakers (`RedisBreaker`): transitions published to all, one probe across processes under
 *   an expiring lease.
 * - Redis failures: with `onStoreError: "local"` (default) each process goes on with its own
 *   budget and breaker, says so once (a `StoreStatus` event, `wiz_store_fallbacks_total`) and
 *   returns to Redis as soon as it answers; with `"fail"` a call that needs the store fails
 *   with `StoreUnavailable`. Commands are not queued while Redis is away (they fail at once),
 *   and each waits at most `timeout`.
 *
 * Each process says it is alive in a sorted set per provider at each reservation; a budget's
 * `state.shared.processes` counts those seen in the last 10 seconds.
 *
 * @example
 * ```ts
 * import { Layer, Redacted } from "effect"
 * import { AgentService } from "wiz-effect"
 * // a subpath of its own, so that only its users load ioredis (5.x, a peer to install)
 * import * as RedisStore from "wiz-effect/store/RedisStore"
 *
 * const store = RedisStore.layer({
 *   url: "redis://127.0.0.1:6379",
 *   prefix: "my-app",
 *   provider: { baseUrl: "https://api.openai.com/v1", apiKey: Redacted.make(process.env.OPENAI_API_KEY!) }
 * })
 * const agent = AgentService.layer({ concurrency: 16 }).pipe(Layer.provide(store))
 * ```
 *
 * @since 0.1.0
 */
import { Duration, Effect, Layer } from "effect"
import { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import * as RedisBreaker from "./RedisBreaker.js"
import * as RedisBudget from "./RedisBudget.js"
import * as SharedStore from "./SharedStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** What to do when Redis fails (default `"local"`). */
  readonly onStoreError?: SharedStore.OnStoreError
  /** Keeps apps sharing one Redis apart (default `"wiz"`). */
  readonly prefix?: string
  /** Who spends the quota; a hash of the key goes into every key name, never the key. */
  readonly provider?: SharedStore.Provider
  /**
   * Longest a Redis command may take before it counts as a failure (default 500 ms): the
   * `commandTimeout` of the client made from `url`, and how long `make` waits for it to
   * connect. A client of yours keeps its own `commandTimeout` (set one).
   */
  readonly timeout?: Duration.DurationInput
  /** After a failure, how long to go on locally before trying Redis again (default 1 s). */
  readonly retryAfter?: Duration.DurationInput
  /** Longest a waiting reservation sleeps before it asks Redis again (default 50 ms). */
  readonly maxWait?: Duration.DurationInput
  /** How long a waiter's place in the queue, or a probe's lease, outlives its holder (default 5 s). */
  readonly lease?: Duration.DurationInput
}

/**
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  onStoreError: "local",
  prefix: "wiz",
  timeout: Duration.millis(500),
  retryAfter: Duration.seconds(1),
  maxWait: Duration.millis(50),
  lease: Duration.seconds(5)
} as const

/**
 * The store over a client of yours (left open when the scope closes) or over a URL (a client
 * made and closed here). Either way a second connection is opened for the breakers' channel.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options & ({ readonly url: string } | { readonly client: Redis })
) =>
  Effect.gen(function*() {
    const timeout = Duration.decode(options.timeout ?? defaults.timeout)
    const client = "client" in options ? options.client : yield* Effect.acquireRelease(
      Effect.sync(() =>
        new Redis(options.url, {
          // fail at once while disconnected (the budget goes local), and reconnect in the background
          enableOfflineQueue: false,
          maxRetriesPerRequest: 0,
          commandTimeout: Duration.toMillis(timeout),
          retryStrategy: (times) => Math.min(times * 100, 1_000)
        })
      ),
      (made) => Effect.promise(() => made.quit().catch(() => made.disconnect()))
    )
    // Connection errors surface as failed commands; without a listener ioredis would also
    // print each one to stderr. A client of yours keeps the listeners you gave it.
    const quiet = () => {}
    if (!("client" in options)) client.on("error", quiet)
    const subscriber = yield* Effect.acquireRelease(
      Effect.sync(() => client.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null })),
      (made) => Effect.sync(() => made.disconnect())
    )
    subscriber.on("error", quiet)
    // Commands fail while the client is not connected: give it `timeout` to connect. A Redis
    // that is not there yet is no error: the budgets go local and come back when it answers.
    if (client.status !== "ready") {
      yield* Effect.raceFirst(
        Effect.async<void>((resume) => {
          const ready = () => resume(Effect.void)
          client.once("ready", ready)
          return Effect.sync(() => client.off("ready", ready))
        }),
        Effect.sleep(timeout)
      )
    }

    const prefix = options.prefix ?? defaults.prefix
    const processId = randomUUID()
    const onStoreError = options.onStoreError ?? defaults.onStoreError
    const lease = Duration.decode(options.lease ?? defaults.lease)
    const retryAfter = Duration.decode(options.retryAfter ?? defaults.retryAfter)
    const processes = { count: 1 }
    const processesKey = `${SharedStore.identity(prefix, options.provider, "")}processes`
    const healths = new Map<SharedStore.Hooks | undefined, RedisBudget.Health>()
    const healthOf = (hooks: SharedStore.Hooks | undefined) => {
      let found = healths.get(hooks)
      if (found === undefined) healths.set(hooks, found = RedisBudget.health(client, retryAfter, hooks))
      return found
    }

    const store: SharedStore.Service = {
      name: "redis",
      budget: (model, budgetOptions, hooks) =>
        RedisBudget.make({
          client,
          key: SharedStore.identity(prefix, options.provider, model),
          processId,
          processesKey,
          onStoreError,
          retryAfter,
          maxWait: Duration.decode(options.maxWait ?? defaults.maxWait),
          lease,
          hooks
        }, budgetOptions, healthOf(hooks), processes),
      breakers: (breakerOptions, hooks) =>
        RedisBreaker.make({
          client,
          subscriber,
          nameOf: (key) => SharedStore.identity(prefix, options.provider, key),
          channel: `${prefix}:breakers`,
          processId,
          onStoreError,
          lease,
          shared: healthOf(hooks)
        }, breakerOptions),
      processes: Effect.sync(() => processes.count)
    }
    return store
  })

/**
 * The store as a layer: `RedisStore.layer({ url })` or `RedisStore.layer({ client })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options & ({ readonly url: string } | { readonly client: Redis })
): Layer.Layer<SharedStore.SharedStore> => Layer.scoped(SharedStore.SharedStore, make(options))
