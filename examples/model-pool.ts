/**
 * ModelPool: a pool of model clients behind one `AiModel`. Waiters are served in arrival order
 * the instant a client comes back (the seed's `AIModelPool` polled every 100 ms), give up after
 * `acquireTimeout` with a typed error, and a client that broke is replaced, never handed out
 * again. `AgentService` runs on the pool without knowing it.
 *
 *   npx tsx examples/model-pool.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Effect, Layer, Stream } from "effect"
import { AgentService, AgentTask, AiModel, EmbeddedModel, ModelPool } from "../src/index.js"

const program = Effect.gen(function*() {
  // 1. AgentService on a pool of 2 embedded-model clients (fast ones, for the example).
  let clients = 0
  const acquire = Effect.zipRight(
    Effect.sync(() => clients++),
    EmbeddedModel.make({ seed: 1, timeToFirstToken: "5 millis", perToken: "0 millis" })
  )
  const pooled = ModelPool.layer({ name: "embedded", acquire, size: 2, acquireTimeout: "5 seconds" })
  const tasks = Array.from({ length: 8 }, (_, i) => new AgentTask.AgentTask({ id: `t${i}`, prompt: `Summarise item ${i}.` }))
  const results = yield* Effect.gen(function*() {
    const agent = yield* AgentService.AgentService
    return yield* Stream.runCollect(agent.processAll(tasks))
  }).pipe(Effect.provide(AgentService.layer({ concurrency: 4 }).pipe(Layer.provide(pooled))))
  yield* Console.log(`AgentService on a pool of 2: ${results.length} tasks done, ${clients} clients made`)

  // 2. Fair waiting and the acquisition timeout, on a pool of one slow client.
  const slow: AiModel.AiModel.Service = {
    name: "slow",
    generate: (request) =>
      Effect.as(
        Effect.sleep("100 millis"),
        new AiModel.Completion({
          text: request.prompt,
          finishReason: "stop",
          usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 1 }),
          model: "slow"
        })
      ),
    stream: () => Stream.empty
  }
  yield* Effect.scoped(Effect.gen(function*() {
    const pool = yield* ModelPool.make({ name: "slow", acquire: Effect.succeed(slow), size: 1, acquireTimeout: "250 millis" })
    const start = yield* Clock.currentTimeMillis
    const ask = (who: string) =>
      pool.withModel((client) => Effect.zipRight(client.generate(new AiModel.CompletionRequest({ prompt: who, maxTokens: 8 })), Clock.currentTimeMillis)).pipe(
        Effect.map((end) => `${who} answered at ${end - start} ms`),
        Effect.catchTag("PoolTimeout", (error) => Effect.succeed(`${who}: ${error.message}`))
      )
    const outcomes = yield* Effect.forEach(["a", "b", "c", "d"], (who, i) => Effect.zipRight(Effect.sleep(`${i} millis`), ask(who)), {
      concurrency: "unbounded"
    })
    yield* Console.log("1 client of 100 ms, 4 callers in a row, 250 ms acquisition timeout:")
    for (const outcome of outcomes) yield* Console.log(`  ${outcome}`)
  }))

  // 3. A client that breaks (a defect) is finished and replaced.
  let made = 0
  let finished = 0
  const fragile = Effect.acquireRelease(
    Effect.sync((): AiModel.AiModel.Service => {
      const id = ++made
      return {
        ...slow,
        name: `client ${id}`,
        generate: (request) => id === 1 ? Effect.die("client 1 lost its connection") : slow.generate(request)
      }
    }),
    () => Effect.sync(() => finished++)
  )
  yield* Effect.scoped(Effect.gen(function*() {
    const pool = yield* ModelPool.make({ name: "fragile", acquire: fragile, size: 1 })
    const request = new AiModel.CompletionRequest({ prompt: "p", maxTokens: 8 })
    const first = yield* Effect.exit(pool.withModel((client) => client.generate(request)))
    const second = yield* pool.withModel((client) => Effect.as(client.generate(request), client.name))
    yield* Console.log(`a broken client: first call ${first._tag}; clients made ${made}, finished ${finished}; next call served by ${second}`)
  }))
})

program.pipe(NodeRuntime.runMain)
