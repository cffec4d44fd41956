import { describe, expect, it } from "@effect/vitest"
import { Chunk, Clock, Duration, Effect, Exit, FastCheck as fc, Fiber, Stream, TestClock } from "effect"
import * as AiModel from "../../src/model/AiModel.js"
import * as ModelPool from "../../src/model/ModelPool.js"

/** Lets every forked fiber run until it is suspended. */
const settle = TestClock.adjust(0)

const request = new AiModel.CompletionRequest({ prompt: "p", maxTokens: 8 })

/**
 * Clients that answer after `latency` ms with their own id, record who held them, and fail the
 * whole test if two users ever hold one client at once.
 */
const clients = (options: { readonly latency?: number; readonly failure?: (id: number, call: number) => "die" | "unavailable" | undefined } = {}) => {
  let made = 0
  let calls = 0
  const closed: Array<number> = []
  const holders = new Map<number, number>()
  const violations: Array<number> = []
  const acquire = Effect.acquireRelease(
    Effect.sync((): AiModel.AiModel.Service => {
      const id = ++made
      const hold = <A, E>(use: Effect.Effect<A, E>) =>
        Effect.suspend(() => {
          if ((holders.get(id) ?? 0) > 0) violations.push(id)
          holders.set(id, (holders.get(id) ?? 0) + 1)
          return Effect.ensuring(use, Effect.sync(() => holders.set(id, holders.get(id)! - 1)))
        })
      return {
        name: `client-${id}`,
        generate: () =>
          hold(Effect.suspend(() => {
            const failure = options.failure?.(id, ++calls)
            if (failure === "die") return Effect.die(`client ${id} broke`)
            if (failure === "unavailable") return Effect.fail(new AiModel.Unavailable({ model: `client-${id}`, reason: "reset" }))
            return Effect.as(
              Effect.sleep(options.latency ?? 10),
              new AiModel.Completion({
                text: String(id),
                finishReason: "stop",
                usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 1 }),
                model: `client-${id}`
              })
            )
          })),
        stream: () => Stream.make(new AiModel.CompletionChunk({ delta: String(id) }), new AiModel.CompletionChunk({ delta: "!", finishReason: "stop" })).pipe(
          Stream.tap(() => Effect.sleep(options.latency ?? 10))
        )
      }
    }),
    (client) => Effect.sync(() => closed.push(Number(client.name.slice(7))))
  )
  return { acquire, made: () => made, closed, violations }
}

describe("ModelPool", () => {
  it.scoped.prop(
    "one client is never held by two users, and every user is served",
    {
      size: fc.integer({ min: 1, max: 4 }),
      users: fc.array(fc.record({ at: fc.integer({ min: 0, max: 50 }), latency: fc.integer({ min: 1, max: 30 }) }), { minLength: 1, maxLength: 25 })
    },
    ({ size, users }) =>
      Effect.gen(function*() {
        const fake = clients()
        const pool = yield* ModelPool.make({ name: "m", acquire: fake.acquire, size, acquireTimeout: Duration.infinity })
        const fiber = yield* Effect.fork(Effect.forEach(users, ({ at, latency }) =>
          Effect.zipRight(Effect.sleep(at), pool.withModel((client) => Effect.zipRight(client.generate(request), Effect.sleep(latency)))), {
          concurrency: "unbounded",
          discard: true
        }))
        yield* TestClock.adjust(users.reduce((sum, u) => sum + u.at + u.latency + 10, 0))
        yield* Fiber.join(fiber)
        expect(fake.violations).toEqual([])
        expect(fake.made()).toBe(size)
      }),
    { fastCheck: { numRuns: 25 } }
  )

  it.scoped("seed bug 9: waiters are served in arrival order the instant a client comes back (the seed polled every 100 ms)", () =>
    Effect.gen(function*() {
      const fake = clients()
      const pool = yield* ModelPool.make({ name: "m", acquire: fake.acquire, size: 1 })
      const starts: Array<string> = []
      const use = (name: string, millis: number) =>
        pool.withModel(() => Effect.zipRight(Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => starts.push(`${name}@${t}`))), Effect.sleep(millis)))
      const holder = yield* Effect.fork(use("holder", 250))
      yield* settle
      // `d` arrives the very instant the holder gives its client back: it must not barge ahead
      const late = yield* Effect.fork(Effect.zipRight(Effect.sleep(250), use("d", 5)))
      const waiters: Array<Fiber.RuntimeFiber<void, unknown>> = []
      for (const name of ["a", "b", "c"]) {
        yield* TestClock.adjust(10)
        waiters.push(yield* Effect.fork(use(name, 5)))
        yield* settle
      }
      yield* TestClock.adjust(300)
      yield* Fiber.join(holder)
      for (const waiter of [...waiters, late]) yield* Fiber.join(waiter)
      expect(starts).toEqual(["holder@0", "a@250", "b@255", "c@260", "d@265"])
    }))

  it.scoped("a caller that gives its client back and asks again at once does not overtake a waiter (Effect's Pool alone lets it)", () =>
    Effect.gen(function*() {
      const fake = clients()
      const pool = yield* ModelPool.make({ name: "m", acquire: fake.acquire, size: 1 })
      const starts: Array<string> = []
      const use = (name: string) =>
        pool.withModel(() => Effect.zipRight(Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => starts.push(`${name}@${t}`))), Effect.sleep(10)))
      const busy = yield* Effect.fork(Effect.zipRight(use("busy"), Effect.zipRight(use("busy"), use("busy"))))
      yield* TestClock.adjust(5)
      const waiter = yield* Effect.fork(use("waiter"))
      yield* TestClock.adjust(40)
      yield* Fiber.join(busy)
      yield* Fiber.join(waiter)
      expect(starts).toEqual(["busy@0", "waiter@10", "busy@20", "busy@30"])
    }))

  it.scoped("the acquisition timeout is exact under TestClock, typed, and the waiter leaves the queue", () =>
    Effect.gen(function*() {
      const fake = clients()
      const pool = yield* ModelPool.make({ name: "m", acquire: fake.acquire, size: 1, acquireTimeout: "1 second" })
      const holder = yield* Effect.fork(pool.withModel(() => Effect.sleep("10 seconds")))
      yield* settle
      const waiter = yield* Effect.fork(pool.withModel(() => Effect.void))
      yield* TestClock.adjust(999)
      expect((yield* Fiber.poll(waiter))._tag).toBe("None")
      yield* TestClock.adjust(1)
      const error = yield* Effect.flip(Fiber.join(waiter))
      expect(error).toEqual(new ModelPool.PoolTimeout({ model: "m", timeout: Duration.seconds(1), size: 1 }))
      expect(error.message).toBe("m: no client free within 1s (pool of 1)")
      yield* TestClock.adjust("9 seconds")
      yield* Fiber.join(holder)
      // nothing was left behind: the next caller gets the client at once
      const t = yield* Clock.currentTimeMillis
      yield* pool.withModel(() => Effect.void)
      expect(yield* Clock.currentTimeMillis).toBe(t)
    }))

  it.scoped("a client that failed fatally is finished, replaced, and never handed out again", () =>
    Effect.gen(function*() {
      const fake = clients({ failure: (id, call) => id === 1 && call === 1 ? "die" : id === 2 && call === 3 ? "unavailable" : undefined })
      const pool = yield* ModelPool.make({
        name: "m",
        acquire: fake.acquire,
        size: 1,
        isFatal: (error) => error._tag === "Unavailable"
      })
      const answer = () => Effect.map(pool.model.generate(request), (c) => c.text)
      // call 1: client 1 dies (a defect: always fatal)
      expect(Exit.isFailure(yield* Effect.exit(answer()))).toBe(true)
      yield* settle
      expect(fake.closed).toEqual([1])
      // calls 2 and 3: client 2; call 3 fails with Unavailable, fatal by `isFatal`
      expect(yield* answer().pipe(Effect.fork, Effect.tap(() => TestClock.adjust(10)), Effect.flatMap(Fiber.join))).toBe("2")
      expect((yield* Effect.flip(answer()))._tag).toBe("Unavailable")
      yield* settle
      expect(fake.closed).toEqual([1, 2])
      expect(yield* answer().pipe(Effect.fork, Effect.tap(() => TestClock.adjust(10)), Effect.flatMap(Fiber.join))).toBe("3")
      expect(fake.made()).toBe(3)
    }))

  it.scoped("a non-fatal model error gives the client back", () =>
    Effect.gen(function*() {
      const fake = clients({ failure: (_, call) => call === 1 ? "unavailable" : undefined })
      const pool = yield* ModelPool.make({ name: "m", acquire: fake.acquire, size: 1 })
      expect((yield* Effect.flip(pool.model.generate(request)))._tag).toBe("Unavailable")
      const fiber = yield* Effect.fork(pool.model.generate(request))
      yield* TestClock.adjust(10)
      expect((yield* Fiber.join(fiber)).text).toBe("1")
      expect(fake.made()).toBe(1)
    }))

  it.scoped("with a time-to-live, a client is replaced once it is that old", () =>
    Effect.gen(function*() {
      const fake = clients({ latency: 1 })
      const pool = yield* ModelPool.make({ name: "m", acquire: fake.acquire, size: 1, timeToLive: "1 minute" })
      const answer = Effect.map(pool.model.generate(request), (c) => c.text).pipe(
        Effect.fork,
        Effect.tap(() => TestClock.adjust(1)),
        Effect.flatMap(Fiber.join)
      )
      expect(yield* answer).toBe("1")
      yield* TestClock.adjust("59 seconds")
      expect(yield* answer).toBe("1")
      yield* TestClock.adjust("1 second")
      expect(fake.closed).toEqual([1])
      expect(yield* answer).toBe("2")
    }))

  it.scoped("a stream holds its client until it ends", () =>
    Effect.gen(function*() {
      const fake = clients({ latency: 10 })
      const pool = yield* ModelPool.make({ name: "m", acquire: fake.acquire, size: 1 })
      const streamed = yield* Effect.fork(Stream.runCollect(pool.model.stream(request)))
      yield* settle
      const other = yield* Effect.fork(Effect.zipRight(pool.withModel(() => Effect.void), Clock.currentTimeMillis))
      yield* TestClock.adjust(20)
      expect(Chunk.toReadonlyArray(yield* Fiber.join(streamed)).map((c) => c.delta)).toEqual(["1", "!"])
      expect(yield* Fiber.join(other)).toBe(20)
      expect(fake.violations).toEqual([])
    }))

  it.effect("layer: the pool is an AiModel, and a pool timeout reaches it as Overloaded", () =>
    Effect.gen(function*() {
      const fake = clients({ latency: 1000 })
      const program = Effect.gen(function*() {
        const model = yield* AiModel.AiModel
        const first = yield* Effect.fork(model.generate(request))
        yield* settle
        const second = yield* Effect.fork(Effect.flip(model.generate(request)))
        yield* TestClock.adjust(500)
        const error = yield* Fiber.join(second)
        yield* TestClock.adjust(500)
        return [model.name, (yield* Fiber.join(first)).text, error] as const
      })
      const [name, text, error] = yield* Effect.provide(program, ModelPool.layer({ name: "pooled", acquire: fake.acquire, size: 1, acquireTimeout: "500 millis" }))
      expect(name).toBe("pooled")
      expect(text).toBe("1")
      expect(error).toEqual(new AiModel.Overloaded({ model: "pooled" }))
      // the layer's release finished the clients
      expect(fake.closed).toEqual([1])
    }))

  it.scoped("a size that is not a positive integer is a defect", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(ModelPool.make({ name: "m", acquire: clients().acquire, size: 0 }))
      expect(Exit.isFailure(exit)).toBe(true)
    }))
})
