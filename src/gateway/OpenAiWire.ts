/**
 * The OpenAI chat-completions protocol as a server speaks it: the request a client sends
 * (decoded with a `Schema`, so a bad request is a 400 that says which field and why) and the
 * JSON a server answers with — a whole completion, the `chat.completion.chunk`s of a stream,
 * and the `{ error: { message, type, code } }` body every OpenAI client knows how to read.
 *
 * Why a module of its own: the client side (`OpenAiCompatible`) writes requests and reads
 * answers of this protocol by hand on its hot path; the server side reads requests and writes
 * answers, and a gateway answers every client through exactly these shapes, so they are decided
 * in one place.
 *
 * A request becomes an {@link AgentTask.AgentTask} field for field: the system (and developer)
 * messages its `system`, the turns its `messages`, `temperature` and `max_tokens` as they are;
 * its `prompt` is the conversation written out (a single user turn is its own text), which is
 * what tokens are counted from and what a model without turns reads. Tool calls, images and
 * `n > 1` are refused with a 400 rather than dropped.
 *
 * @example
 * ```ts
 * import { Either } from "effect"
 * import * as OpenAiWire from "wiz-effect/gateway/OpenAiWire"
 *
 * const request = OpenAiWire.decodeRequest({ model: "m", messages: [{ role: "user", content: "Hi" }] })
 * if (Either.isRight(request)) OpenAiWire.toTask(request.right, "chatcmpl-1", { maxTokens: 256 }).prompt // "Hi"
 * ```
 *
 * @since 0.1.0
 */
import { Either, ParseResult, Schema } from "effect"
import { AgentTask } from "../agent/AgentTask.js"
import type * as AiModel from "../model/AiModel.js"

/** A message's content: text, or text parts (any other part is refused). */
const Content = Schema.Union(
  Schema.String,
  Schema.Array(Schema.Struct({ type: Schema.Literal("text"), text: Schema.String }))
)

/**
 * One message of a chat request.
 *
 * @since 0.1.0
 * @category models
 */
export const ChatMessage = Schema.Struct({
  role: Schema.Literal("system", "developer", "user", "assistant"),
  content: Content
})

/**
 * A `POST /v1/chat/completions` body: the fields a gateway honours. Fields it does not know
 * are ignored, as OpenAI's own server ignores none it knows; the ones that would change the
 * answer and that it cannot honour (tools, functions, more than one choice) are refused.
 *
 * @since 0.1.0
 * @category models
 */
export const ChatRequest = Schema.Struct({
  model: Schema.String.pipe(Schema.minLength(1)),
  messages: Schema.Array(ChatMessage).pipe(Schema.minItems(1, { message: () => "at least one message is needed" })),
  max_tokens: Schema.optional(Schema.Int.pipe(Schema.positive())),
  max_completion_tokens: Schema.optional(Schema.Int.pipe(Schema.positive())),
  temperature: Schema.optional(Schema.Number.pipe(Schema.between(0, 2))),
  stream: Schema.optional(Schema.Boolean),
  stream_options: Schema.optional(Schema.NullOr(Schema.Struct({ include_usage: Schema.optional(Schema.Boolean) }))),
  n: Schema.optional(Schema.Literal(1)),
  tools: Schema.optional(Schema.Array(Schema.Unknown).pipe(Schema.filter((tools) => tools.length === 0 || "tools are not supported"))),
  functions: Schema.optional(
    Schema.Array(Schema.Unknown).pipe(Schema.filter((functions) => functions.length === 0 || "functions are not supported"))
  )
})

/**
 * @since 0.1.0
 * @category models
 */
export type ChatRequest = typeof ChatRequest.Type

const decode = Schema.decodeUnknownEither(ChatRequest, { onExcessProperty: "ignore", errors: "all" })

/**
 * A request body, or what is wrong with it (each field once: `messages.0.role: ...`).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeRequest = (json: unknown): Either.Either<ChatRequest, string> =>
  Either.mapLeft(decode(json), (error) => {
    const byPath = new Map<string, string>()
    for (const issue of ParseResult.ArrayFormatter.formatErrorSync(error)) {
      const path = issue.path.join(".")
      if (!byPath.has(path)) byPath.set(path, path === "" ? issue.message : `${path}: ${issue.message}`)
    }
    return [...byPath.values()].join("; ")
  })

const textOf = (content: typeof Content.Type): string =>
  typeof content === "string" ? content : content.map((part) => part.text).join("")

/**
 * The task a request asks for, named `id`: `maxTokens` is the request's, or `options.maxTokens`
 * when it gives none, never above `options.maxTokensCap`. Check {@link refusal} first.
 *
 * @since 0.1.0
 * @category constructors
 */
export const toTask = (
  request: ChatRequest,
  id: string,
  options: { readonly maxTokens: number; readonly maxTokensCap?: number }
): AgentTask => {
  const system: Array<string> = []
  const turns: Array<AiModel.Message> = []
  for (const message of request.messages) {
    const content = textOf(message.content)
    if (message.role === "system" || message.role === "developer") system.push(content)
    else turns.push({ role: message.role, content })
  }
  const asked = request.max_completion_tokens ?? request.max_tokens ?? options.maxTokens
  const maxTokens = Math.min(asked, options.maxTokensCap ?? asked)
  const prompt = turns.length === 1 ? turns[0]!.content : turns.map((turn) => `${turn.role}: ${turn.content}`).join("\n\n")
  return new AgentTask({
    id,
    prompt,
    maxTokens,
    ...(system.length === 0 ? {} : { system: system.join("\n\n") }),
    ...(request.temperature === undefined ? {} : { temperature: request.temperature }),
    ...(turns.length === 1 ? {} : { messages: turns })
  })
}

/**
 * Why a request cannot become a task, or undefined: a conversation must end with the user's
 * turn and hold a non-empty one.
 *
 * @since 0.1.0
 * @category decoding
 */
export const refusal = (request: ChatRequest): string | undefined => {
  const turns = request.messages.filter((message) => message.role === "user" || message.role === "assistant")
  const last = turns.at(-1)
  if (last === undefined || last.role !== "user") return "messages: the conversation must end with a user message"
  if (turns.every((turn) => textOf(turn.content) === "")) return "messages: every user and assistant message is empty"
  return undefined
}

const usageJson = (usage: AiModel.Usage) => ({
  prompt_tokens: usage.promptTokens,
  completion_tokens: usage.completionTokens,
  total_tokens: usage.promptTokens + usage.completionTokens
})

/**
 * A whole answer, as `POST /v1/chat/completions` returns it.
 *
 * @since 0.1.0
 * @category encoding
 */
export const completionJson = (id: string, created: number, completion: AiModel.Completion) => ({
  id,
  object: "chat.completion",
  created,
  model: completion.model,
  choices: [{
    index: 0,
    message: { role: "assistant", content: completion.text },
    finish_reason: completion.finishReason,
    logprobs: null
  }],
  usage: usageJson(completion.usage)
})

/**
 * One `chat.completion.chunk` of a stream: text (the first carries the `assistant` role), or the
 * final one's finish reason with an empty delta.
 *
 * @since 0.1.0
 * @category encoding
 */
export const chunkJson = (
  id: string,
  created: number,
  model: string,
  delta: { readonly role?: "assistant"; readonly content?: string },
  finishReason: AiModel.FinishReason | null
) => ({
  id,
  object: "chat.completion.chunk",
  created,
  model,
  choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }]
})

/**
 * The usage chunk a stream ends with when the client asked for it (`stream_options.include_usage`).
 *
 * @since 0.1.0
 * @category encoding
 */
export const usageChunkJson = (id: string, created: number, model: string, usage: AiModel.Usage) => ({
  id,
  object: "chat.completion.chunk",
  created,
  model,
  choices: [],
  usage: usageJson(usage)
})

/**
 * An error body in OpenAI's shape, for a response and for an SSE `data:` event after a 200.
 *
 * @since 0.1.0
 * @category encoding
 */
export const errorJson = (message: string, type: string, code: string | null = null) => ({
  error: { message, type, param: null, code }
})

/**
 * One Server-Sent Event holding `json` (or the `[DONE]` marker).
 *
 * @since 0.1.0
 * @category encoding
 */
export const sse = (json: unknown): string => `data: ${typeof json === "string" ? json : JSON.stringify(json)}\n\n`
