/**
 * Memo: a model answer computed once per prompt and reused for a time-to-live, at most
 * `capacity` answers kept, failures never kept (the seed's `LazyAIProcessor` handed out a
 * rejected promise forever and never forgot anything).
 *
 *   npx tsx examples/memo.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Metric } from "effect"
import { Memo } from "../src/index.js"

const program = Effect.gen(function*() {
  let modelCalls = 0
  // A model that fails its first call on "flaky", and takes 20 ms otherwise.
  const callModel = (prompt: string) =>
    Effect.suspend(() => {
      modelCalls++
      if (prompt === "flaky" && modelCalls === 1) return Effect.fail(`model unavailable for "${prompt}"`)
      return Effect.as(Effect.sleep("20 millis"), `answer to "${prompt}" (call ${modelCalls})`)
    })

  const answers = yield* Memo.make({ name: "answers", lookup: callModel, capacity: 2, timeToLive: "100 millis" })

  const failed = yield* Effect.flip(answers.get("flaky"))
  yield* Console.log(`first try: ${failed}`)
  yield* Console.log(`second try: ${yield* answers.get("flaky")}   <- the failure was not kept`)
  yield* Console.log(`third try:  ${yield* answers.get("flaky")}   <- now from the memo`)

  // Ten callers asking at once share one computation.
  const together = yield* Effect.forEach(Array.from({ length: 10 }), () => answers.get("popular"), {
    concurrency: "unbounded"
  })
  yield* Console.log(`10 callers at once: ${new Set(together).size} distinct answer, model calls so far ${modelCalls}`)

  // Capacity 2: a third prompt evicts the least recently used one.
  yield* answers.get("another")
  yield* Console.log(`after a third prompt: ${JSON.stringify(yield* answers.stats)}`)

  // Past the time-to-live, the answer is computed again.
  yield* Effect.sleep("150 millis")
  yield* Console.log(`150 ms later: ${yield* answers.get("popular")}`)

  const hits = yield* Metric.value(Metric.tagged(Memo.metrics.hits, "memo", "answers"))
  yield* Console.log(`metric wiz_memo_hits_total{memo="answers"} = ${hits.count}`)
})

program.pipe(NodeRuntime.runMain)
