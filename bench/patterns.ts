/**
 * The patterns of issue 8 against the peers they replace, measured in the same run: request
 * coalescing (`Coalesce`) on a miss and on a hit, against the seed's `Map` of promises and the
 * Effect built-ins it could have been built on (`Request`/`RequestResolver`, `Cache`, a `Map` of
 * `Deferred`s); memoization (`Memo`) against `Cache.get` and the seed's `LazyAIProcessor`; and
 * 1,000 callers on a pool of 3 model clients, `ModelPool` against Effect's `Pool` alone. Run with `npm run bench -- patterns`; numbers are medians of
 * repeated rounds, in µs per call.
 *
 * What it measures is overhead: the model answers at once (a miss) or after one yield (a hit,
 * so that 1,000 callers are in flight together), so every microsecond is coalescing code.
 */
import { Cache, Deferred, Effect, Either, Equal, Hash, Layer, Pool, Request, RequestResolver, Scope } from "effect"
import { AgentService, AgentTask, AiModel, Coalesce, Memo, ModelPool } from "../src/index.js"
import { effectSequential, instantModel, perCall, promiseSequential, request } from "./measure.js"

/** A coalescer as every contender is driven here: one key, one effect. */
type Coalescer = <A, E>(key: string, effect: Effect.Effect<A, E>) => Effect.Effect<A, E>

/** The seed's `RequestCoalescer` written as Effect code: a `Map` of `Deferred`s, no reference count. */
const mapOfDeferreds = (): Coalescer => {
  const pending = new Map<string, Deferred.Deferred<any, any>>()
  return (key, effect) =>
    Effect.suspend(() => {
      const current = pending.get(key)
      if (current !== undefined) return Deferred.await(current)
      const deferred = Deferred.unsafeMake<any, any>(undefined as never)
      pending.set(key, deferred)
      return Effect.onExit(effect, (exit) => {
        pending.delete(key)
        return Deferred.done(deferred, exit)
      })
    })
}

/** A request whose identity is its key alone (the effect rides along). */
class Call extends Request.Class<any, any, { readonly key: string; readonly effect: Effect.Effect<any, any> }> {
  [Equal.symbol](that: unknown): boolean {
    return that instanceof Call && that.key === this.key
  }
  [Hash.symbol](): number {
    return Hash.string(this.key)
  }
}

/** `Effect.request` with a private request cache, invalidated when the call ends (or it would memoize). */
const requestResolver = async (): Promise<Coalescer> => {
  const cache = await Effect.runPromise(Request.makeCache({ capacity: 1 << 30, timeToLive: "1 hour" }))
  const resolver = RequestResolver.fromEffect((call: Call) => call.effect)
  return (key, effect) => {
    const call = new Call({ key, effect })
    return Effect.request(call, resolver).pipe(
      Effect.ensuring(cache.invalidate(call)),
      Effect.withRequestCaching(true),
      Effect.withRequestCache(cache)
    )
  }
}

/** `Cache.get`, the caller that ran the lookup invalidating the entry afterwards. */
class Key {
  constructor(readonly key: string, readonly effect: Effect.Effect<any, any>) {}
  [Equal.symbol](that: unknown): boolean {
    return that instanceof Key && that.key === this.key
  }
  [Hash.symbol](): number {
    return Hash.string(this.key)
  }
}
const cacheGet = async (): Promise<Coalescer> => {
  const cache = await Effect.runPromise(
    Cache.make<Key, any, any>({ capacity: 1 << 30, timeToLive: "1 hour", lookup: (key) => key.effect })
  )
  return (key, effect) => {
    const k = new Key(key, effect)
    return Effect.flatMap(cache.getEither(k), (got) =>
      Either.isRight(got) ? Effect.as(cache.invalidate(k), got.right) : Effect.succeed(got.left))
  }
}

/** The seed's `RequestCoalescer`, as it is. */
const seedCoalescer = () => {
  const pending = new Map<string, Promise<unknown>>()
  return (key: string, fetcher: () => Promise<unknown>): Promise<unknown> => {
    const current = pending.get(key)
    if (current !== undefined) return current
    const promise = fetcher().finally(() => pending.delete(key))
    pending.set(key, promise)
    return promise
  }
}

/** The seed's `LazyAIProcessor`, as it is (no capacity, no time-to-live, failures kept). */
const seedLazyProcessor = () => {
  const cache = new Map<string, Promise<unknown>>()
  return {
    process: (key: string, generator: () => Promise<unknown>): Promise<unknown> => {
      if (!cache.has(key)) cache.set(key, generator())
      return cache.get(key)!
    }
  }
}

/** `callers` at once on one key, the shared call yielding once so that all of them join it. */
const effectHit = (callers: number, coalesce: Coalescer) => {
  const run = Effect.forEach(Array.from({ length: callers }), () => coalesce("same", Effect.yieldNow()), {
    concurrency: "unbounded",
    discard: true
  })
  return perCall(callers, () => Effect.runPromise(run))
}

const main = async () => {
  const calls = 20_000
  const callers = 1000
  const rows: Array<[string, number, string]> = []
  const row = (name: string, us: number, note = "") => {
    rows.push([name, us, note])
    console.error(`  ${name}: ${us.toFixed(2)} µs`)
  }
  const ratio = (us: number, peer: number, name: string) => `${(us / peer).toFixed(2)}× ${name}`

  console.error("measuring coalescing on a miss (sequential calls, each ends before the next)...")
  const coalesce = await Effect.runPromise(Coalesce.make<any, any>())
  const contenders: Array<[string, Coalescer]> = [
    ["Coalesce.apply", (key, effect) => coalesce.apply(key, effect)],
    ["Coalesce.share", (key, effect) => Effect.flatMap(coalesce.share(key, effect), (shared) => shared.exit)],
    ["Map of Deferreds (the seed's coalescer in Effect, no reference count)", mapOfDeferreds()],
    ["Effect.request + RequestResolver + request cache", await requestResolver()],
    ["Cache.get + invalidate", await cacheGet()]
  ]
  const base = await effectSequential(calls, instantModel.generate(request))
  row("model call alone", base)
  const missOf = new Map<string, number>()
  for (const [name, co] of contenders) {
    // the Request contender is ~100× slower: fewer calls keep the run short
    const n = name.startsWith("Effect.request") ? calls / 10 : calls
    const us = (await effectSequential(n, co("k", instantModel.generate(request)))) - base
    missOf.set(name, us)
  }
  const seedBase = await promiseSequential(calls, () => Promise.resolve(1))
  const seed = seedCoalescer()
  const seedMiss = (await promiseSequential(calls, () => seed("k", () => Promise.resolve(1)))) - seedBase
  for (const [name, us] of missOf) row(`miss, added per call: ${name}`, us, ratio(us, seedMiss, "the seed"))
  row("miss, added per call: the seed's Map of promises", seedMiss)

  console.error("measuring AgentService.process with and without coalescing (every task a miss)...")
  const service = await Effect.runPromise(
    Effect.flatMap(Scope.make(), (scope) => Scope.extend(AgentService.make(), scope)).pipe(
      Effect.provide(Layer.succeed(AiModel.AiModel, instantModel))
    )
  )
  // whatever `process` answers (its types follow AgentService)
  type Processed = ReturnType<typeof service.process>
  const records = await Effect.runPromise(Coalesce.make<Effect.Effect.Success<Processed>, Effect.Effect.Error<Processed>>())
  const task = new AgentTask.AgentTask({ id: "t", prompt: "p" })
  const alone = await effectSequential(calls, service.process(task))
  const coalesced = await effectSequential(calls, records.share(task.prompt, service.process(task)))
  row("AgentService.process, one task after another", alone)
  row("coalesced: share(prompt, process(task)), one after another", coalesced, ratio(coalesced, alone, "process alone"))
  // As `processAll` runs them: 8 at a time, distinct prompts, so every task is a miss.
  const tasks = Array.from({ length: calls / 4 }, (_, i) => new AgentTask.AgentTask({ id: `t${i}`, prompt: `p${i}` }))
  const eight = (f: (task: AgentTask.AgentTask) => Effect.Effect<unknown, unknown>) =>
    perCall(tasks.length, () => Effect.runPromise(Effect.forEach(tasks, f, { concurrency: 8, discard: true })))
  const alone8 = await eight(service.process)
  const coalesced8 = await eight((t) => records.share(t.prompt, service.process(t)))
  row("AgentService.process, 8 at a time", alone8)
  row("coalesced: share(prompt, process(task)), 8 at a time", coalesced8, ratio(coalesced8, alone8, "process alone (target ≤ 2×)"))

  console.error(`measuring coalescing on a hit (${callers} identical callers in flight)...`)
  const fibers = await perCall(callers, () =>
    Effect.runPromise(Effect.forEach(Array.from({ length: callers }), () => Effect.yieldNow(), { concurrency: "unbounded", discard: true })))
  row(`${callers} fibers, no coalescing (each its own call)`, fibers)
  for (const [name, co] of contenders) {
    const us = await effectHit(callers, co)
    row(`hit, per caller: ${name}`, us, ratio(us, fibers, "the fibers alone"))
  }
  const seedHit = await perCall(callers, () =>
    Promise.all(Array.from({ length: callers }, () => seed("same", () => new Promise((r) => setImmediate(r))))))
  row("hit, per caller: the seed's Map of promises", seedHit)

  console.error("measuring memoization (sequential calls)...")
  const memo = await Effect.runPromise(Memo.make({ lookup: (_: string) => instantModel.generate(request), capacity: 1000 }))
  const cache = await Effect.runPromise(Cache.make({ lookup: (_: string) => instantModel.generate(request), capacity: 1000, timeToLive: "10 minutes" }))
  const seedMemo = seedLazyProcessor()
  await Effect.runPromise(Effect.zip(memo.get("hot"), cache.get("hot")))
  const memoHit = await effectSequential(calls, memo.get("hot"))
  const cacheHit = await effectSequential(calls, cache.get("hot"))
  const seedMemoHit = await promiseSequential(calls, () => seedMemo.process("hot", () => Promise.resolve(1)))
  row("Memo.get, a hit", memoHit, ratio(memoHit, cacheHit, "Cache.get"))
  row("Cache.get, a hit", cacheHit)
  row("the seed's LazyAIProcessor, a hit", seedMemoHit)
  // every call a new key, so every call computes and (past 1,000 keys) evicts one
  let key = 0
  const memoMiss = await effectSequential(calls, Effect.suspend(() => memo.get(`k${key++}`)))
  const cacheMiss = await effectSequential(calls, Effect.suspend(() => cache.get(`k${key++}`)))
  row("Memo.get, a miss (computes and evicts)", memoMiss, ratio(memoMiss, cacheMiss, "Cache.get"))
  row("Cache.get, a miss (computes and evicts)", cacheMiss)

  console.error(`measuring a pool of 3 model clients with ${callers} callers waiting...`)
  // A pool per round, then every caller at once, each holding a client across one yield.
  const contended = (make: Effect.Effect<Effect.Effect<unknown, unknown>, never, Scope.Scope>) =>
    perCall(callers, () =>
      Effect.runPromise(Effect.scoped(Effect.flatMap(make, (use) =>
        Effect.forEach(Array.from({ length: callers }), () => use, { concurrency: "unbounded", discard: true })))))
  const viaModelPool = await contended(Effect.map(
    ModelPool.make({ name: "instant", acquire: Effect.succeed(instantModel), size: 3 }),
    (pool) => pool.withModel(() => Effect.yieldNow())
  ))
  const viaPool = await contended(Effect.map(
    Pool.make({ acquire: Effect.succeed(instantModel), size: 3 }),
    (pool) => Effect.scoped(Effect.zipRight(pool.get, Effect.yieldNow()))
  ))
  row(`ModelPool.withModel, ${callers} callers on 3 clients`, viaModelPool, ratio(viaModelPool, viaPool, "Effect's Pool.get"))
  row(`Effect's Pool.get, ${callers} callers on 3 clients`, viaPool)

  console.log("")
  console.log("| case | µs per call | ratio |")
  console.log("|---|---:|---|")
  for (const [name, us, note] of rows) console.log(`| ${name} | ${us.toFixed(2)} | ${note} |`)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
