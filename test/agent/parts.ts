/**
 * What the tests of AgentService's parts share: a model that answers or fails as a test says,
 * counting its calls and how many were on the wire at once, and the policies, bus and task
 * context one service would hand its parts.
 */
import { Clock, Effect, Stream } from "effect"
import * as AgentService from "../../src/agent/AgentService.js"
import { AgentTask } from "../../src/agent/AgentTask.js"
import * as Policies from "../../src/agent/Policies.js"
import * as TaskRun from "../../src/agent/TaskRun.js"
import * as EventBus from "../../src/events/EventBus.js"
import * as AiModel from "../../src/model/AiModel.js"

/** A model whose n-th call waits `latency` ms then plays `outcome(n)`: an error, or an answer. */
export const model = (name: string, outcome: (n: number) => AiModel.ModelError | undefined = () => undefined, latency = 10) => {
  const seen = { calls: 0, onWire: 0, maxOnWire: 0 }
  const service: AiModel.AiModel.Service = {
    name,
    generate: (request) =>
      Effect.suspend(() => {
        const n = seen.calls++
        seen.onWire++
        seen.maxOnWire = Math.max(seen.maxOnWire, seen.onWire)
        const error = outcome(n)
        return Effect.sleep(latency).pipe(
          Effect.ensuring(Effect.sync(() => seen.onWire--)),
          Effect.zipRight(
            error === undefined
              ? Effect.succeed(
                new AiModel.Completion({
                  text: `${name}: ${request.prompt}`,
                  finishReason: "stop",
                  usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 2 }),
                  model: name
                })
              )
              : Effect.fail(error)
          )
        )
      }),
    stream: (request) =>
      Stream.make(
        new AiModel.CompletionChunk({ delta: `${name}: ` }),
        new AiModel.CompletionChunk({
          delta: request.prompt,
          finishReason: "stop",
          usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 2 })
        })
      )
  }
  return { service, seen }
}

export const task = (id: string, prompt = `prompt of ${id}`) => new AgentTask({ id, prompt })

export const request = (prompt: string) => new AiModel.CompletionRequest({ prompt, maxTokens: 16 })

/** The bus, the task context and the policies of a service built with `options`. */
export const parts = (options: AgentService.Options = {}) =>
  Effect.gen(function*() {
    const bus = yield* EventBus.make()
    const context = TaskRun.context(bus, options.deadline ?? AgentService.defaults.deadline)
    const policies = yield* Policies.make(options, bus)
    const runOf = (t: AgentTask) => Effect.map(Clock.currentTimeMillis, (start) => TaskRun.make(t, context, start))
    return { bus, context, policies, runOf }
  })
