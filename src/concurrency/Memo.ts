/**
 * Lazy memoization of an effectful function: nothing is computed until a key is asked for; a
 * value, once computed, is kept for a time-to-live, and at most `capacity` values are kept. A failure is never kept: the callers waiting for that
 * computation get it, the next caller computes again. The seed's `LazyAIProcessor` stored the
 * promise itself, so a rejected promise was handed out forever, and its `Map` grew without bound
 * (seed bug 8).
 *
 * Built on Effect's `Cache` (storage, `Clock`-driven expiry, capacity with least-recently-used
 * eviction), with two changes measured against `Cache.get` (effect 3.22):
 * - `Cache.get` runs the lookup in the fiber of the first caller, so interrupting that caller
 *   interrupts every other caller waiting for the same key (`lookupValueOf`). Here a missing key
 *   is computed through a {@link Coalesce}: in a fiber of its own, which every caller (the first
 *   one included) may leave without harming the others, and which is interrupted only when all of
 *   them have left, storing nothing.
 * - `Cache.get` tracks a key's recency under a key object made when the lookup starts, and the
 *   finished value under another one, so the first stays early in the queue and the value is
 *   evicted by insertion order even if it was just used (capacity 2, get a, b, a, c: `a` goes;
 *   pinned by a test). Here a value is stored with `Cache.set` and touched at once, so its
 *   recency is tracked under one key object, and a stored value is read only after `contains`,
 *   so a miss leaves no stray key object behind. One stray remains per value that expired or was
 *   invalidated: if that key is stored again, its new value may be evicted before values used
 *   less recently, once. The capacity is never exceeded.
 * A failure is never stored, so it cannot be served, however the calls interleave.
 *
 * Hits, misses and evictions are Effect `Metric` counters (see {@link metrics}), tagged with the
 * memo's `name`, and `stats` reads this instance's own counts.
 *
 * Expiry reads Effect's `Clock`, so a time-to-live is exact under `TestClock`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel, Memo } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   const answers = yield* Memo.make({
 *     name: "answers",
 *     lookup: (prompt: string) => model.generate(new AiModel.CompletionRequest({ prompt, maxTokens: 64 })),
 *     capacity: 1000,
 *     timeToLive: "10 minutes"
 *   })
 *   const first = yield* answers.get("Summarise: ...") // computes
 *   const again = yield* answers.get("Summarise: ...") // from the memo, within ten minutes
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Cache, Duration, Effect, Either, Metric } from "effect"
import { identity } from "effect/Function"
import * as Coalesce from "./Coalesce.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<K, A, E, R> {
  /** Computes the value of a key. Runs only for a key that is asked for and not stored. */
  readonly lookup: (key: K) => Effect.Effect<A, E, R>
  /** How many values are kept at most. */
  readonly capacity?: number
  /** How long a computed value is kept, from the moment it was computed. */
  readonly timeToLive?: Duration.DurationInput
  /** The `memo` tag of this memo's metrics. */
  readonly name?: string
}

/**
 * `capacity: 1000`: a bound on memory (the seed's map grew forever) that still holds a busy
 * agent's working set of prompts. `timeToLive: 10 minutes`: a completion for the same prompt is
 * worth reusing for minutes, not for the life of the process (models and prompts change).
 * `name: "memo"`.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  capacity: 1000,
  timeToLive: Duration.minutes(10),
  name: "memo"
} as const

/**
 * Counts of one memo.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Calls answered from a stored value. */
  readonly hits: number
  /** Calls that waited for a computation (started it, or joined one in flight). */
  readonly misses: number
  /** Values dropped to stay within `capacity`. */
  readonly evictions: number
  /** Values stored now. */
  readonly size: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Memo<K, A, E> {
  /**
   * The value of `key`: stored, or computed now (one computation per key at a time, shared by
   * every caller that asks meanwhile). A failure reaches the callers of that computation and is
   * not stored. `whileJoined`, if given, wraps the wait of a caller that joined another
   * caller's computation (see `Coalesce`).
   */
  readonly get: (key: K, whileJoined?: Coalesce.WhileJoined) => Effect.Effect<A, E>
  /**
   * As `get`, and says where the value came from: `Left` when it was stored (a hit), `Right`
   * when this call waited for a computation (like `Cache.getEither`).
   */
  readonly getEither: (key: K, whileJoined?: Coalesce.WhileJoined) => Effect.Effect<Either.Either<A, A>, E>
  /** Forgets the value of `key` (a computation in flight still stores its result). */
  readonly invalidate: (key: K) => Effect.Effect<void>
  /** Forgets every value. */
  readonly invalidateAll: Effect.Effect<void>
  /** This memo's counts. */
  readonly stats: Effect.Effect<Stats>
}

/**
 * The memos' counters, as Effect `Metric`s; each update is tagged `memo` with the memo's `name`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  hits: Metric.counter("wiz_memo_hits_total", { description: "memo calls answered from a stored value", incremental: true }),
  misses: Metric.counter("wiz_memo_misses_total", { description: "memo calls that waited for a computation", incremental: true }),
  evictions: Metric.counter("wiz_memo_evictions_total", { description: "memo values dropped for capacity", incremental: true })
} as const

/**
 * A new, empty memo of `lookup`. The context `lookup` needs is taken from the caller of `make`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <K, A, E = never, R = never>(options: Options<K, A, E, R>): Effect.Effect<Memo<K, A, E>, never, R> =>
  Effect.gen(function*() {
    const capacity = options.capacity ?? defaults.capacity
    if (!(Number.isInteger(capacity) && capacity >= 1)) {
      return yield* Effect.die(new RangeError(`Memo: capacity must be a positive integer (got ${capacity})`))
    }
    const timeToLive = Duration.decode(options.timeToLive ?? defaults.timeToLive)
    const name = options.name ?? defaults.name
    const hitsMetric = Metric.tagged(metrics.hits, "memo", name)
    const missesMetric = Metric.tagged(metrics.misses, "memo", name)
    const evictionsMetric = Metric.tagged(metrics.evictions, "memo", name)
    let hits = 0
    let misses = 0
    let evictions = 0
    // `lookup` is what `Cache.get` would run; this memo never calls `get` (see the module doc).
    const cache = yield* Cache.make({ capacity, timeToLive, lookup: options.lookup })
    const loads = yield* Coalesce.make<A, E, K>()

    // Stores a computed value and touches it, which evicts for it; counts what was dropped.
    const store = (key: K, value: A): Effect.Effect<A> =>
      Effect.flatMap(Effect.zip(cache.size, cache.contains(key)), ([before, had]) =>
        cache.set(key, value).pipe(
          Effect.zipRight(cache.getOptionComplete(key)),
          Effect.zipRight(cache.size),
          Effect.map((after) => {
            const evicted = before + (had ? 0 : 1) - after
            if (evicted > 0) {
              evictions += evicted
              evictionsMetric.unsafeUpdate(evicted, [])
            }
            return value
          })
        ))

    // Runs in the computation's own fiber, one per key at a time.
    const context = yield* Effect.context<R>()
    const load = (key: K): Effect.Effect<A, E> =>
      Effect.flatMap(Effect.provide(Effect.suspend(() => options.lookup(key)), context), (value) => store(key, value))

    const miss = (key: K, whileJoined: Coalesce.WhileJoined | undefined): Effect.Effect<A, E> => {
      misses++
      missesMetric.unsafeUpdate(1, [])
      return loads.apply(key, load(key), whileJoined)
    }

    // A stored value is read only after `contains`, so that a miss adds no recency key to the cache.
    const find = <X>(key: K, hit: (value: A) => X, onMiss: (key: K) => Effect.Effect<X, E>): Effect.Effect<X, E> =>
      Effect.flatMap(cache.contains(key), (has) =>
        has
          ? Effect.flatMap(cache.getOptionComplete(key), (stored) => {
            if (stored._tag === "None") return onMiss(key) // it had expired
            hits++
            hitsMetric.unsafeUpdate(1, [])
            return Effect.succeed(hit(stored.value))
          })
          : onMiss(key))

    const memo: Memo<K, A, E> = {
      get: (key, whileJoined) => find(key, identity, (key) => miss(key, whileJoined)),
      getEither: (key, whileJoined) =>
        find<Either.Either<A, A>>(key, Either.left, (key) => Effect.map(miss(key, whileJoined), Either.right)),
      invalidate: (key) => cache.invalidate(key),
      invalidateAll: cache.invalidateAll,
      stats: Effect.map(cache.size, (size) => ({ hits, misses, evictions, size }))
    }
    return memo
  })
