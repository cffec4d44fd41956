/**
 * CircuitBreaker: trip after failures, fail fast with `CircuitOpen { retryAfter }`, let a bounded
 * number of probes through in half-open, watch the transitions, and keep one circuit per model.
 *
 *   npx tsx examples/circuit-breaker.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Duration, Effect, Either, Stream } from "effect"
import { AiModel, CircuitBreaker } from "../src/index.js"

const program = Effect.gen(function*() {
  const start = yield* Clock.currentTimeMillis
  const breaker = yield* CircuitBreaker.make({
    name: "gpt",
    tripPolicy: CircuitBreaker.consecutive(3),
    openDuration: "200 millis",
    halfOpen: { probes: 2, successesToClose: 2 } // at most 2 probes at once; 2 successes close it
  })
  // Print every transition. `subscribe` listens from this line on, so even a transition made
  // before the printer's fiber first runs is printed.
  yield* (yield* breaker.subscribe).pipe(
    Stream.runForEach((t) => Console.log(`  [transition] ${t.from} -> ${t.to} at ${t.at - start} ms`)),
    Effect.forkScoped
  )

  let modelCalls = 0
  const down = Effect.suspend(() => (modelCalls++, Effect.fail(new AiModel.Overloaded({ model: "gpt" }))))
  const healthy = Effect.suspend(() => (modelCalls++, Effect.as(Effect.sleep("30 millis"), "answer")))
  const show = (label: string, call: Effect.Effect<string, AiModel.ModelError | CircuitBreaker.CircuitOpen>) =>
    Effect.either(call).pipe(
      Effect.flatMap((r) =>
        Console.log(`  ${label}: ${
          Either.isRight(r) ? r.right
          : r.left._tag === "CircuitOpen" ? `CircuitOpen from ${r.left.breaker}, retryAfter ${Duration.format(r.left.retryAfter)}`
          : r.left._tag
        }`)),
      Effect.zipLeft(Effect.yieldNow()) // lets the transition printer keep up
    )

  yield* Console.log("Three failures in a row trip the circuit:")
  for (let i = 1; i <= 3; i++) yield* show(`call ${i}`, breaker.execute(down))

  yield* Console.log("While open, calls fail at once without reaching the model:")
  yield* show("call 4", breaker.execute(down))
  yield* Console.log(`  model calls so far: ${modelCalls}`)

  yield* Effect.sleep("200 millis")
  yield* Console.log(`After the open time the state is ${yield* breaker.state}; four callers arrive at once:`)
  yield* Effect.forEach([1, 2, 3, 4], (i) => show(`caller ${i}`, breaker.execute(healthy)), { concurrency: "unbounded" })
  yield* Console.log(`  state: ${yield* breaker.state} (model calls: ${modelCalls}; two probes ran, two were refused)`)

  // One circuit per key: a failing model does not stop calls to another.
  yield* Console.log("A keyed breaker keeps a circuit per model:")
  const perModel = yield* CircuitBreaker.makeKeyed({ name: "llm", tripPolicy: CircuitBreaker.consecutive(1) })
  yield* show("call gpt", perModel.execute("gpt")(down))
  yield* show("call gpt", perModel.execute("gpt")(down))
  yield* show("call claude", perModel.execute("claude")(healthy))
  const states = [yield* perModel.state("gpt"), yield* perModel.state("claude")]
  yield* Console.log(`  gpt is ${states[0]}, claude is ${states[1]}`)
}).pipe(Effect.scoped)

program.pipe(NodeRuntime.runMain)
