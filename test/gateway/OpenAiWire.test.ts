import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import * as OpenAiWire from "../../src/gateway/OpenAiWire.js"
import * as AiModel from "../../src/model/AiModel.js"

const decoded = (json: unknown) => {
  const result = OpenAiWire.decodeRequest(json)
  if (Either.isLeft(result)) throw new Error(result.left)
  return result.right
}

describe("OpenAiWire", () => {
  it("a chat request becomes a task field for field: system, temperature and turns, never folded into the prompt", () => {
    const request = decoded({
      model: "m",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "developer", content: [{ type: "text", text: "No lists." }] },
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello." },
        { role: "user", content: "Summarise Effect." }
      ],
      temperature: 0.5,
      max_tokens: 99,
      unknown_field: true
    })
    const task = OpenAiWire.toTask(request, "chatcmpl-1", { maxTokens: 256, maxTokensCap: 50 })
    expect(task).toMatchObject({
      id: "chatcmpl-1",
      system: "Be brief.\n\nNo lists.",
      temperature: 0.5,
      maxTokens: 50,
      messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello." }, { role: "user", content: "Summarise Effect." }]
    })
    expect(task.prompt).toBe("user: Hi\n\nassistant: Hello.\n\nuser: Summarise Effect.")
    expect(task.prompt).not.toContain("Be brief")
  })

  it("a single user turn is its own prompt, with no turns and the default max_tokens", () => {
    const task = OpenAiWire.toTask(decoded({ model: "m", messages: [{ role: "user", content: "Hi" }] }), "c", { maxTokens: 256 })
    expect({ ...task }).toStrictEqual({ id: "c", prompt: "Hi", maxTokens: 256 })
  })

  it("refuses what it cannot honour, naming the field: tools, n > 1, an image, a bad temperature, a conversation not ending with the user", () => {
    const refused = (json: unknown) => Either.getLeft(OpenAiWire.decodeRequest(json)).pipe((o) => (o._tag === "Some" ? o.value : ""))
    expect(refused({ model: "m", messages: [{ role: "user", content: "x" }], tools: [{}] })).toContain("tools are not supported")
    expect(refused({ model: "m", messages: [{ role: "user", content: "x" }], n: 2 })).toMatch(/^n: /)
    expect(refused({ model: "m", messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] })).toMatch(/^messages\.0\.content/)
    expect(refused({ model: "m", messages: [{ role: "user", content: "x" }], temperature: 3 })).toMatch(/^temperature: /)
    expect(refused({ model: "m", messages: [] })).toMatch(/^messages: /)
    expect(OpenAiWire.refusal(decoded({ model: "m", messages: [{ role: "user", content: "x" }, { role: "assistant", content: "y" }] }))).toContain(
      "must end with a user message"
    )
  })

  it("answers in OpenAI's shapes: a completion, chunks, a usage chunk, an error, SSE events", () => {
    const completion = new AiModel.Completion({
      text: "hi",
      finishReason: "length",
      usage: new AiModel.Usage({ promptTokens: 3, completionTokens: 1 }),
      model: "m"
    })
    expect(OpenAiWire.completionJson("c", 7, completion)).toMatchObject({
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "length" }],
      usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 }
    })
    expect(OpenAiWire.chunkJson("c", 7, "m", { content: "x" }, null).choices[0]).toStrictEqual({
      index: 0,
      delta: { content: "x" },
      finish_reason: null,
      logprobs: null
    })
    expect(OpenAiWire.usageChunkJson("c", 7, "m", completion.usage)).toMatchObject({ choices: [], usage: { total_tokens: 4 } })
    expect(OpenAiWire.errorJson("no", "server_error", "x")).toStrictEqual({ error: { message: "no", type: "server_error", param: null, code: "x" } })
    expect(OpenAiWire.sse("[DONE]")).toBe("data: [DONE]\n\n")
    expect(OpenAiWire.sse({ a: 1 })).toBe(`data: {"a":1}\n\n`)
  })
})
