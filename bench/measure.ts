/**
 * What every benchmark script shares: the measuring loop (medians of repeated rounds) and a
 * model that answers at once, so what is measured is the code around the call.
 */
import { Effect, Stream } from "effect"
import { performance } from "node:perf_hooks"
import { AiModel } from "../src/index.js"

const rounds = 7

export const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** µs per call: the median over `rounds` of `run` (after one warm-up run), divided by `calls`. */
export const perCall = async (calls: number, run: () => Promise<unknown>) => {
  await run()
  const samples: Array<number> = []
  for (let r = 0; r < rounds; r++) {
    const start = performance.now()
    await run()
    samples.push(((performance.now() - start) * 1000) / calls)
  }
  return median(samples)
}

/** `calls` sequential runs of `one`, inside a single Effect run. */
export const effectSequential = (calls: number, one: Effect.Effect<unknown, unknown>) => {
  const loop = Effect.gen(function*() {
    for (let i = 0; i < calls; i++) yield* one
  })
  return perCall(calls, () => Effect.runPromise(loop))
}

/** `calls` sequential awaits of `one`. */
export const promiseSequential = (calls: number, one: () => Promise<unknown>) =>
  perCall(calls, async () => {
    for (let i = 0; i < calls; i++) await one()
  })

export const completion = new AiModel.Completion({
  text: "ok",
  finishReason: "stop",
  usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 1 }),
  model: "instant"
})

/** A model that answers at once. */
export const instantModel: AiModel.AiModel.Service = {
  name: "instant",
  generate: () => Effect.succeed(completion),
  stream: () => Stream.empty
}

export const request = new AiModel.CompletionRequest({ prompt: "p", maxTokens: 8 })
