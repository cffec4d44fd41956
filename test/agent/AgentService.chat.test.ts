import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Stream } from "effect"
import * as AgentService from "../../src/agent/AgentService.js"
import { AgentTask, encodeRecord } from "../../src/agent/AgentTask.js"
import * as AiModel from "../../src/model/AiModel.js"

/** A model that keeps every request it is sent and answers with a fixed finish reason and usage. */
const recording = () => {
  const requests: Array<AiModel.CompletionRequest> = []
  const completion = new AiModel.Completion({
    text: "hello there",
    finishReason: "length",
    usage: new AiModel.Usage({ promptTokens: 11, completionTokens: 2 }),
    model: "m"
  })
  const model = AiModel.make({
    name: "m",
    generate: (request) => Effect.sync(() => (requests.push(request), completion))
  })
  return { model, requests }
}

const agentOn = (model: AiModel.AiModel.Service, options: AgentService.Options = {}) =>
  AgentService.layer(options).pipe(Layer.provide(Layer.succeed(AiModel.AiModel, model)))

const chat = new AgentTask({
  id: "c1",
  prompt: "user: hi",
  maxTokens: 2,
  system: "Be brief.",
  temperature: 0.2,
  messages: [{ role: "user", content: "hi" }]
})

describe("AgentService (a chat request)", () => {
  it.effect("complete passes the system message, temperature and turns to the model as fields, not prompt text", () =>
    Effect.gen(function*() {
      const { model, requests } = recording()
      const agent = yield* AgentService.AgentService.pipe(Effect.provide(agentOn(model)))
      const { completion, record } = yield* agent.complete(chat)
      expect(requests).toHaveLength(1)
      expect(requests[0]).toMatchObject({
        prompt: "user: hi",
        maxTokens: 2,
        system: "Be brief.",
        temperature: 0.2,
        messages: [{ role: "user", content: "hi" }]
      })
      expect(completion.finishReason).toBe("length")
      expect(completion.usage.totalTokens).toBe(13)
      // the record is the one `process` gives: no new fields
      expect(Object.keys(encodeRecord(record)).sort()).toStrictEqual(["attempts", "degraded", "durationMs", "id", "model", "output", "status"])
    }))

  it.effect("a task without chat fields sends the request it always did", () =>
    Effect.gen(function*() {
      const { model, requests } = recording()
      const agent = yield* AgentService.AgentService.pipe(Effect.provide(agentOn(model)))
      yield* agent.process(new AgentTask({ id: "t1", prompt: "p" }))
      expect({ ...requests[0] }).toStrictEqual({ prompt: "p", maxTokens: AgentService.defaults.maxTokens })
    }))

  it.effect("stream passes the chat fields too, and its last chunk carries finish reason and usage", () =>
    Effect.gen(function*() {
      const { model, requests } = recording()
      const agent = yield* AgentService.AgentService.pipe(Effect.provide(agentOn(model)))
      const chunks = Chunk.toReadonlyArray(yield* Stream.runCollect(agent.stream(chat)))
      expect(requests[0]).toMatchObject({ system: "Be brief.", temperature: 0.2 })
      expect(chunks.at(-1)).toMatchObject({ finishReason: "length", usage: { promptTokens: 11, completionTokens: 2 } })
    }))

  it.effect("a failed chat request fails complete with the task's record and the typed error that ended it", () =>
    Effect.gen(function*() {
      const model = AiModel.make({
        name: "m",
        generate: () => Effect.fail(new AiModel.InvalidRequest({ model: "m", reason: "no" }))
      })
      const agent = yield* AgentService.AgentService.pipe(Effect.provide(agentOn(model)))
      const failed = yield* Effect.flip(agent.complete(chat))
      expect(failed.record).toMatchObject({ _tag: "TaskFailed", id: "c1", error: { _tag: "InvalidRequest" } })
      // the typed error itself, not only its record's summary
      expect(failed.error).toBeInstanceOf(AiModel.InvalidRequest)
    }))
})
