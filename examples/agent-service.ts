/**
 * AgentService over the EmbeddedModel with injected faults: a batch of tasks through retry,
 * circuit breaker, timeout and a static fallback, watching the policies' events as they happen.
 *
 *   npx tsx examples/agent-service.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Chunk, Clock, Console, Effect, Layer, Stream } from "effect"
import { AgentService, AgentTask, CircuitBreaker, EmbeddedModel } from "../src/index.js"

// A simulated provider: fast, but 30% of calls fail (Overloaded, or hang until the timeout).
const model = EmbeddedModel.layer({
  seed: 7, // faults are drawn per prompt from this seed; try another one
  timeToFirstToken: "30 millis",
  perToken: "1 millis",
  failureRate: 0.3,
  faults: { overloaded: 2, hang: 1 }
})

const agent = AgentService.layer({
  concurrency: 4,
  maxTokens: 24,
  timeout: "150 millis", // per attempt: a hung call is interrupted and retried
  retry: { base: "20 millis", cap: "100 millis", maxAttempts: 4 },
  // Retries may add 10% of traffic plus one a second; waiting out an open breaker is free.
  retryBudget: { ratio: 0.1, minPerSecond: 1, window: "10 seconds" },
  breaker: { tripPolicy: CircuitBreaker.consecutive(3), openDuration: "100 millis" },
  fallback: { staticAnswer: (task) => `(no answer for ${task.id} right now)` }
})

const topics = ["retries", "breakers", "timeouts", "bulkheads", "hedging", "fallbacks", "budgets", "streams"]
const tasks = [
  ...topics.map((topic, i) =>
    new AgentTask.AgentTask({ id: `t${i + 1}`, prompt: `Explain ${topic}. Agents rely on ${topic} when a provider fails.` })),
  new AgentTask.AgentTask({ id: "blank", prompt: " " }) // the model refuses it: a typed failure, not a null
]

const program = Effect.gen(function*() {
  const service = yield* AgentService.AgentService
  // Subscribe before the work starts so no event is missed; print the policy events live.
  const events = yield* service.subscribe
  yield* events.pipe(
    Stream.runForEach((event) => {
      switch (event._tag) {
        case "RetryScheduled":
          return Console.log(`  retry   ${event.taskId}: attempt ${event.attempt} in ${event.delayMillis} ms (${event.error._tag})`)
        case "RetryGivenUp":
          return Console.log(`  give up ${event.taskId}: ${event.reason} after ${event.attempts} (${event.error._tag})`)
        case "BreakerTransition":
          return Console.log(`  breaker ${event.breaker}: ${event.from} -> ${event.to}`)
        case "FallbackUsed":
          return Console.log(`  degrade ${event.taskId}: answered by "${event.tier}"`)
        default:
          return Effect.void
      }
    }),
    Effect.forkScoped
  )

  const start = yield* Clock.currentTimeMillis
  const results = Chunk.toReadonlyArray(yield* Stream.runCollect(service.processAll(tasks)))
  const elapsed = (yield* Clock.currentTimeMillis) - start
  yield* Effect.yieldNow() // let the event printer catch up

  yield* Console.log("Results, in the order they finished:")
  for (const r of results) {
    yield* Console.log(
      r.status === "succeeded"
        ? `  ${r.id.padEnd(5)} ok     ${r.attempts} call(s), ${r.model}${r.degraded ? " (degraded)" : ""}: ${r.output.split("\n")[0]}`
        : `  ${r.id.padEnd(5)} failed ${r.attempts} call(s), ${r.error._tag}: ${r.error.message}`
    )
  }
  const ok = results.filter((r) => r.status === "succeeded")
  yield* Console.log(`${results.length} tasks in ${elapsed} ms: ${ok.length} succeeded ` +
    `(${ok.filter((r) => r.degraded).length} degraded), ${results.length - ok.length} failed, ` +
    `${results.reduce((calls, r) => calls + r.attempts, 0)} model calls`)
}).pipe(Effect.scoped, Effect.provide(agent.pipe(Layer.provide(model))))

program.pipe(NodeRuntime.runMain)
