/**
 * Differential check against the official `openai` package: the same recorded JSON and SSE
 * bodies (OpenAI, Ollama, llama.cpp and vLLM shapes, under `test/fixtures/chat-completions/`),
 * served by the loopback FakeProvider to both clients, must give the same text, finish reason
 * and usage. The bodies are also served cut into 1-, 3- and 7-byte writes, so both parsers face
 * lines and UTF-8 characters split across reads.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, layer } from "@effect/vitest"
import { Chunk, Effect, Redacted, Stream } from "effect"
import { readFileSync } from "node:fs"
import OpenAI from "openai"
import * as AiModel from "../../src/model/AiModel.js"
import * as OpenAiCompatible from "../../src/model/OpenAiCompatible.js"
import * as Fake from "../support/FakeProvider.js"

const fixture = (name: string) => readFileSync(new URL(`../fixtures/chat-completions/${name}`, import.meta.url), "utf8")
const wholeFixtures = ["openai-whole.json", "openai-length.json", "ollama-whole.json", "llamacpp-whole.json"]
const streamFixtures = ["openai-stream.sse", "ollama-stream.sse", "llamacpp-stream.sse", "vllm-stream.sse"]

interface Outcome {
  readonly text: string
  readonly finishReason: string | null | undefined
  readonly usage: { readonly prompt: number; readonly completion: number } | undefined
}

/** openai's finish reasons in our two-valued terms: only `length` means the answer was cut. */
const finish = (reason: string | null | undefined) => (reason === "length" ? "length" : "stop")

const prompt = "Summarise: Effect is a TypeScript library."

const setup = Effect.gen(function*() {
  const fake = yield* Fake.make()
  const ours = yield* OpenAiCompatible.make({ baseUrl: fake.url, model: "gpt-4o-mini", apiKey: Redacted.make("sk-test-differential") })
  const theirs = new OpenAI({ apiKey: "sk-test-differential", baseURL: fake.url, maxRetries: 0, timeout: 10_000 })
  return { fake, ours, theirs }
})

const request = new AiModel.CompletionRequest({ prompt, maxTokens: 64 })

layer(NodeHttpClient.layerUndici)("OpenAiCompatible against the official openai package", (it) => {
  describe("whole answers", () => {
    for (const name of wholeFixtures) {
      it.scoped(`${name}: the same text, finish reason and usage`, () =>
        Effect.gen(function*() {
          const { fake, ours, theirs } = yield* setup
          const body = fixture(name)
          yield* fake.script(Fake.raw(200, body, { headers: { "content-type": "application/json" } }))
          const completion = yield* ours.generate(request)
          yield* fake.script(Fake.raw(200, body, { headers: { "content-type": "application/json" } }))
          const answer = yield* Effect.promise(() =>
            theirs.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: prompt }], max_tokens: 64 })
          )
          const theirsOutcome: Outcome = {
            text: answer.choices[0]?.message.content ?? "",
            finishReason: finish(answer.choices[0]?.finish_reason),
            usage: answer.usage === undefined ? undefined : { prompt: answer.usage.prompt_tokens, completion: answer.usage.completion_tokens }
          }
          const oursOutcome: Outcome = {
            text: completion.text,
            finishReason: completion.finishReason,
            usage: { prompt: completion.usage.promptTokens, completion: completion.usage.completionTokens }
          }
          expect(oursOutcome).toStrictEqual(theirsOutcome)
          expect(theirsOutcome.text.length).toBeGreaterThan(10)
          // both sent the same request body
          const [mine, official] = yield* fake.requests
          expect((mine!.body as any).messages).toStrictEqual((official!.body as any).messages)
          expect((mine!.body as any).max_tokens).toBe((official!.body as any).max_tokens)
        }))
    }
  })

  describe("streamed answers", () => {
    for (const name of streamFixtures) {
      for (const split of [undefined, 1, 3, 7]) {
        it.scoped(`${name}${split === undefined ? "" : `, written ${split} byte(s) at a time`}: the same text, finish reason and usage`, () =>
          Effect.gen(function*() {
            const { fake, ours, theirs } = yield* setup
            const reply = () =>
              Fake.raw(200, fixture(name), { headers: { "content-type": "text/event-stream" }, chunked: true, ...(split === undefined ? {} : { split }) })
            yield* fake.script(reply())
            const chunks = Chunk.toReadonlyArray(yield* Stream.runCollect(ours.stream(request)))
            const last = chunks.at(-1)!
            const oursOutcome: Outcome = {
              text: chunks.map((c) => c.delta).join(""),
              finishReason: last.finishReason,
              usage: last.usage === undefined ? undefined : { prompt: last.usage.promptTokens, completion: last.usage.completionTokens }
            }
            yield* fake.script(reply())
            const theirsOutcome = yield* Effect.promise(async (): Promise<Outcome> => {
              const stream = await theirs.chat.completions.create({
                model: "gpt-4o-mini",
                messages: [{ role: "user", content: prompt }],
                max_tokens: 64,
                stream: true,
                stream_options: { include_usage: true }
              })
              let text = ""
              let reason: string | null | undefined
              let usage: Outcome["usage"]
              for await (const chunk of stream) {
                const choice = chunk.choices[0]
                text += choice?.delta.content ?? ""
                if (choice?.finish_reason) reason = choice.finish_reason
                if (chunk.usage) usage = { prompt: chunk.usage.prompt_tokens, completion: chunk.usage.completion_tokens }
              }
              return { text, finishReason: finish(reason), usage }
            })
            expect(oursOutcome).toStrictEqual(theirsOutcome)
            expect(theirsOutcome.text.length).toBeGreaterThan(10)
            expect(theirsOutcome.usage).toBeDefined()
          }))
      }
    }
  })
})
