/**
 * A pool of model clients behind one `AiModel`: each call takes a client, holds it for the
 * call (for a stream, until the stream ends) and gives it back. Callers beyond the pool's size
 * wait in strict arrival order, each resumed exactly once when a client comes back, for at most
 * `acquireTimeout` (then `PoolTimeout`). A client that failed fatally is invalidated: it is
 * finished (its scope closed), replaced, and never handed out again. With `timeToLive`, a client
 * is replaced once it is that old.
 *
 * The seed's `AIModelPool` polled every 100 ms for a free model, had no fairness, no timeout,
 * and no way to drop a broken model (seed bug 9).
 *
 * Built on Effect's `Pool` (the clients' life cycle: acquisition in a scope of their own,
 * scoped use, invalidation and replacement, time-to-live), with our {@link Bulkhead} in front
 * for the waiting: `Pool` queues its waiters on Effect's `Semaphore`, which wakes every waiter on
 * each release and lets a newcomer take a client ahead of them (effect 3.22; see `Bulkhead`).
 * The bulkhead has one permit per client, so a caller it admits finds a client free (or being
 * replaced) in the `Pool`. One pool serves one model name; give each model of a fallback chain
 * its own `layer`.
 *
 * `layer` provides both `ModelPool` and `AiModel`, so `AgentService` runs on a pool without
 * knowing it. As an `AiModel`, a `PoolTimeout` is reported as `Overloaded` (the model error
 * union has no pool error): like a provider's 503, it says "try again later".
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { AgentService, EmbeddedModel, ModelPool } from "wiz-effect"
 *
 * // four clients of the model; a task waits at most 10 seconds for one
 * const pooled = ModelPool.layer({
 *   name: "embedded",
 *   acquire: EmbeddedModel.make({ seed: 1 }),
 *   size: 4,
 *   acquireTimeout: "10 seconds",
 *   timeToLive: "15 minutes"
 * })
 * const agent = AgentService.layer({ concurrency: 16 }).pipe(Layer.provide(pooled))
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Context, Duration, Effect, Exit, Layer, Pool, Schema, Stream } from "effect"
import type { Scope } from "effect"
import * as Bulkhead from "../concurrency/Bulkhead.js"
import { AiModel, type ModelError, Overloaded } from "./AiModel.js"

/**
 * No client came free within `timeout`: all `size` of them stayed busy.
 *
 * @since 0.1.0
 * @category errors
 */
export class PoolTimeout extends Schema.TaggedError<PoolTimeout>()("PoolTimeout", {
  model: Schema.String,
  timeout: Schema.Duration,
  size: Schema.Int
}) {
  override get message(): string {
    return `${this.model}: no client free within ${Duration.format(this.timeout)} (pool of ${this.size})`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<R> {
  /** The model's name: the pooled `AiModel`'s `name`, and the `model` of a `PoolTimeout`. */
  readonly name: string
  /** Makes one client. Its scope closes when the client is dropped (invalidated, expired, or the pool closes). */
  readonly acquire: Effect.Effect<AiModel.Service, ModelError, R | Scope.Scope>
  /** How many clients: a positive integer. */
  readonly size?: number
  /** How long a caller waits for a client before failing with `PoolTimeout`. */
  readonly acquireTimeout?: Duration.DurationInput
  /** How old a client may grow before it is replaced; by default, forever. */
  readonly timeToLive?: Duration.DurationInput
  /**
   * Which model errors mean the client itself is broken (it is then invalidated). A defect
   * always does.
   */
  readonly isFatal?: (error: ModelError) => boolean
}

/**
 * `size: 4`: a few connections' worth of parallel calls; match it to the provider's limits.
 * `acquireTimeout: 30 seconds`: a caller gives up rather than queue forever, and gets a typed
 * error it can retry. `timeToLive: infinity`: clients live until they break. `isFatal`: no
 * model error, because a typed `ModelError` is the provider's answer (or its absence), not a
 * sign that this client object is broken; a defect is (the client threw), so it is always fatal.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  size: 4,
  acquireTimeout: Duration.seconds(30),
  timeToLive: Duration.infinity,
  isFatal: (_: ModelError): boolean => false
} as const

/**
 * The pool as a service.
 *
 * @since 0.1.0
 * @category tags
 */
export class ModelPool extends Context.Tag("wiz-effect/ModelPool")<ModelPool, ModelPool.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace ModelPool {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    readonly name: string
    readonly size: number
    /**
     * Runs `f` with a client, held until `f` ends. Waits in arrival order, at most
     * `acquireTimeout`; fails with `PoolTimeout`, or with the acquisition's error if a client
     * could not be made. A defect in `f` invalidates the client.
     */
    readonly withModel: <A, E2, R2>(
      f: (client: AiModel.Service) => Effect.Effect<A, E2, R2>
    ) => Effect.Effect<A, E2 | PoolTimeout | ModelError, R2>
    /** Drops `client`: it is finished and replaced once its current user gives it back. */
    readonly invalidate: (client: AiModel.Service) => Effect.Effect<void>
    /** The pool as a model: each call holds a client; a fatal failure invalidates it. */
    readonly model: AiModel.Service
  }
}

/**
 * A pool of `size` clients, made at once in the background and finished when the scope closes.
 * `size` must be a positive integer; anything else is a defect (`RangeError`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <R>(options: Options<R>): Effect.Effect<ModelPool.Service, never, Scope.Scope | R> =>
  Effect.gen(function*() {
    const size = options.size ?? defaults.size
    if (!(Number.isInteger(size) && size >= 1)) {
      return yield* Effect.die(new RangeError(`ModelPool: size must be a positive integer (got ${size})`))
    }
    const name = options.name
    const timeout = Duration.decode(options.acquireTimeout ?? defaults.acquireTimeout)
    const timeToLive = Duration.decode(options.timeToLive ?? defaults.timeToLive)
    const isFatal = options.isFatal ?? defaults.isFatal
    const pool = Duration.isFinite(timeToLive)
      ? yield* Pool.makeWithTTL({ acquire: options.acquire, min: size, max: size, timeToLive, timeToLiveStrategy: "creation" })
      : yield* Pool.make({ acquire: options.acquire, size })
    const bulkhead = yield* Bulkhead.make({ permits: size })

    // A permit first (FIFO), then the client: the scope closes in reverse, client back first.
    const take = Effect.zipRight(bulkhead.takePermits(1), pool.get)
    const timedOut = () => new PoolTimeout({ model: name, timeout, size })
    const get: Effect.Effect<AiModel.Service, ModelError | PoolTimeout, Scope.Scope> = Duration.isFinite(timeout)
      ? Effect.timeoutFail(take, { duration: timeout, onTimeout: timedOut })
      : take

    // `typed`: the error channel holds model errors, so `isFatal` may judge them.
    const fatal = (cause: Cause.Cause<unknown>, typed: boolean): boolean => {
      if (Cause.isDie(cause)) return true
      const error = Cause.failureOption(cause)
      return typed && error._tag === "Some" && isFatal(error.value as ModelError)
    }
    const invalidateOnFatal = (client: AiModel.Service, typed: boolean) => <A, E>(exit: Exit.Exit<A, E>) =>
      Exit.isFailure(exit) && fatal(exit.cause, typed) ? pool.invalidate(client) : Effect.void

    const withModel = <A, E2, R2>(f: (client: AiModel.Service) => Effect.Effect<A, E2, R2>) =>
      Effect.scoped(Effect.flatMap(get, (client) => Effect.onExit(f(client), invalidateOnFatal(client, false))))

    // The model face: pool errors become model errors, and fatal model errors drop the client.
    const asModelError = <A>(self: Effect.Effect<A, ModelError | PoolTimeout, Scope.Scope>) =>
      Effect.catchTag(self, "PoolTimeout", () => Effect.fail(new Overloaded({ model: name })))
    const model: AiModel.Service = {
      name,
      generate: (request) =>
        Effect.scoped(Effect.flatMap(asModelError(get), (client) =>
          Effect.onExit(client.generate(request), invalidateOnFatal(client, true)))),
      stream: (request) =>
        Stream.unwrapScoped(Effect.map(asModelError(get), (client) =>
          client.stream(request).pipe(
            Stream.onError((cause) => fatal(cause, true) ? pool.invalidate(client) : Effect.void)
          )))
    }

    const service: ModelPool.Service = {
      name,
      size,
      withModel,
      invalidate: (client) => pool.invalidate(client),
      model
    }
    return service
  })

/**
 * A layer with the pool as both `ModelPool` and `AiModel`; the clients are finished when the
 * layer is released.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <R>(options: Options<R>): Layer.Layer<ModelPool | AiModel, never, Exclude<R, Scope.Scope>> =>
  Layer.scopedContext(Effect.map(make(options), (pool) => Context.make(ModelPool, pool).pipe(Context.add(AiModel, pool.model))))
