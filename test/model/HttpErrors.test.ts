import { describe, expect, it } from "@effect/vitest"
import { Duration, FastCheck as fc } from "effect"
import * as AiModel from "../../src/model/AiModel.js"
import * as HttpErrors from "../../src/model/HttpErrors.js"
import * as Secrets from "../support/Secrets.js"

const response = (status: number, body: string, headers: Record<string, string> = {}): HttpErrors.Response => ({
  model: "m",
  status,
  headers,
  body,
  now: 0
})

describe("HttpErrors", () => {
  it("the status table: each status is its typed error", () => {
    const tags = [429, 402, 401, 403, 408, 409, 400, 404, 413, 422, 418, 500, 502, 503, 504, 529, 302].map((status) =>
      [status, HttpErrors.fromResponse(response(status, "{\"error\":{\"message\":\"x\"}}"))._tag]
    )
    expect(tags).toStrictEqual([
      [429, "RateLimited"],
      [402, "QuotaExhausted"],
      [401, "AuthenticationFailed"],
      [403, "AuthenticationFailed"],
      [408, "ModelTimeout"],
      [409, "ProviderError"],
      [400, "InvalidRequest"],
      [404, "InvalidRequest"],
      [413, "InvalidRequest"],
      [422, "InvalidRequest"],
      [418, "InvalidRequest"],
      [500, "ProviderError"],
      [502, "ProviderError"],
      [503, "Overloaded"],
      [504, "ProviderError"],
      [529, "Overloaded"],
      [302, "ProviderError"]
    ])
  })

  it("a 408 reports how long the request took (issue 18.5: and names its status)", () => {
    const error = HttpErrors.fromResponse({ ...response(408, ""), elapsed: Duration.seconds(3) })
    expect(error).toStrictEqual(new AiModel.ModelTimeout({ model: "m", timeout: Duration.seconds(3), status: 408 }))
    expect(error.message).toBe("m: the provider gave up with HTTP 408 (request timeout) after 3s")
  })

  it("readErrorBody reads OpenAI's, Anthropic's, Ollama's and FastAPI's shapes, and an HTML page's title", () => {
    expect(HttpErrors.readErrorBody("{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\",\"code\":\"x_y\"}}", [])).toStrictEqual({
      message: "bad",
      type: "invalid_request_error",
      code: "x_y",
      html: false
    })
    expect(HttpErrors.readErrorBody("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", [])).toMatchObject({
      message: "Overloaded",
      type: "overloaded_error"
    })
    expect(HttpErrors.readErrorBody("{\"error\":\"model not found\"}", [])).toMatchObject({ message: "model not found" })
    expect(HttpErrors.readErrorBody("{\"detail\":\"Not Found\"}", [])).toMatchObject({ message: "Not Found" })
    expect(HttpErrors.readErrorBody("{\"error\":{\"code\":400,\"message\":\"m\"}}", [])).toMatchObject({ code: "400" })
    expect(HttpErrors.readErrorBody("<!DOCTYPE html><html><title> 504 Gateway Time-out </title></html>", [])).toStrictEqual({
      message: "an HTML page: 504 Gateway Time-out",
      type: undefined,
      code: undefined,
      html: true
    })
    expect(HttpErrors.readErrorBody("  ", [])).toMatchObject({ message: "" })
    expect(HttpErrors.readErrorBody("upstream connect error", [])).toMatchObject({ message: "upstream connect error" })
  })

  it("a long provider message is shortened in the reason", () => {
    const error = HttpErrors.fromResponse(response(400, JSON.stringify({ error: { message: "x".repeat(1000) } })))
    expect((error as AiModel.InvalidRequest).reason.length).toBe(HttpErrors.defaults.maxReasonLength)
  })

  it("fromErrorEvent classifies an in-stream error by its type and code, and leaves the unknown to the caller", () => {
    const body = (type: string, message = "m") => HttpErrors.readErrorBody(JSON.stringify({ error: { type, message } }), [])
    expect(HttpErrors.fromErrorEvent("m", body("overloaded_error"), undefined)?._tag).toBe("Overloaded")
    expect(HttpErrors.fromErrorEvent("m", body("rate_limit_error", "too many output tokens"), undefined)).toMatchObject({
      _tag: "RateLimited",
      limit: "outputTokens"
    })
    expect(HttpErrors.fromErrorEvent("m", body("insufficient_quota"), undefined)?._tag).toBe("QuotaExhausted")
    expect(HttpErrors.fromErrorEvent("m", body("invalid_request_error", "prompt is too long"), undefined)).toMatchObject({
      _tag: "InvalidRequest",
      contextLengthExceeded: true
    })
    expect(HttpErrors.fromErrorEvent("m", body("authentication_error"), undefined)?._tag).toBe("AuthenticationFailed")
    expect(HttpErrors.fromErrorEvent("m", body("server_error"), undefined)).toBeUndefined()
  })

  it("isContextLength knows the providers' words and nothing else", () => {
    for (
      const text of [
        "This model's maximum context length is 4096 tokens.",
        "the request exceeds the available context size, try increasing it",
        "prompt is too long: 210000 tokens > 200000 maximum",
        "Input is too long: context_length 8192",
        "too many tokens in the prompt",
        "Prompt exceeds the model's maximum context length"
      ]
    ) expect(HttpErrors.isContextLength(text), text).toBe(true)
    for (const text of ["temperature must be below 2", "model not found", "rate limit reached on tokens"]) {
      expect(HttpErrors.isContextLength(text), text).toBe(false)
    }
  })

  it("scrub removes the secrets given and anything shaped like a key, a bearer token or a JWT", () => {
    expect(HttpErrors.scrub("key sk-proj-abcDEF123456_xyz was bad", [])).toBe("key [redacted] was bad")
    expect(HttpErrors.scrub("Authorization: Bearer abc.def-123", [])).toBe("Authorization: [redacted]")
    expect(HttpErrors.scrub("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", [])).toBe("token [redacted]")
    expect(HttpErrors.scrub("my secret is hunter2-hunter2 ok", ["hunter2-hunter2"])).toBe("my secret is [redacted] ok")
    // too short to be a key: left alone rather than shredding the message
    expect(HttpErrors.scrub("a b c", ["b"])).toBe("a b c")
  })

  it.prop(
    "a secret in the body never reaches the error, whatever the status and wherever the body puts it",
    [
      fc.integer({ min: 300, max: 599 }),
      fc.string({ unit: fc.constantFrom("a", "Z", "9", "-", "_"), minLength: 12, maxLength: 40 }),
      fc.constantFrom("json-message", "json-code", "json-type", "text", "html", "string-error"),
      fc.constantFrom("true", "false", "")
    ],
    ([status, tail, where, shouldRetry]) => {
      const secret = `k3y${tail}`
      const body = where === "json-message"
        ? JSON.stringify({ error: { message: `bad key ${secret}!` } })
        : where === "json-code"
        ? JSON.stringify({ error: { message: "x", code: secret } })
        : where === "json-type"
        ? JSON.stringify({ error: { message: "x", type: `t ${secret}` } })
        : where === "html"
        ? `<html><title>${secret}</title></html>`
        : where === "string-error"
        ? JSON.stringify({ error: `${secret}` })
        : `plain ${secret} text`
      const headers: Record<string, string> = shouldRetry === "" ? {} : { "x-should-retry": shouldRetry }
      const error = HttpErrors.fromResponse({ ...response(status, body, headers), secrets: [secret] })
      expect(`${error.message} ${JSON.stringify(error)}`).not.toContain(secret)
    }
  )
  it("issue 18.3: any run of 8 or more characters of the key is the key: half of it echoed, a key cut short, two pieces", () => {
    const key = "Q7wzT1mK9pLr4XvB2nHc8JdF5sYg3AeU6oWi0ZkN"
    expect(HttpErrors.scrub(`key ${key.slice(0, 20)}... is not valid`, [key])).toBe("key [redacted]... is not valid")
    expect(HttpErrors.scrub(`Incorrect key: ***${key.slice(-8)}`, [key])).toBe("Incorrect key: ***[redacted]")
    expect(HttpErrors.scrub(`a ${key.slice(3, 11)} and b ${key.slice(20, 35)}.`, [key])).toBe("a [redacted] and b [redacted].")
    // touching pieces go as one; seven characters are not a piece
    expect(HttpErrors.scrub(`${key.slice(0, 10)}${key.slice(25)}`, [key])).toBe("[redacted]")
    expect(HttpErrors.scrub(`x ${key.slice(0, 7)} y`, [key])).toBe(`x ${key.slice(0, 7)} y`)
  })

  it.prop(
    "issue 18.3: scrubbing leaves no 8-character piece of the key, wherever pieces of it sit in the text, and cutting after it leaves none either",
    [
      fc.array(
        fc.tuple(fc.string({ maxLength: 12 }), fc.nat({ max: 39 }), fc.integer({ min: 1, max: 40 })),
        { minLength: 1, maxLength: 6 }
      ),
      fc.integer({ min: 1, max: 200 })
    ],
    ([parts, cut]) => {
      const key = Secrets.freshKey()
      const text = parts.map(([filler, at, length]) => `${filler}${key.slice(at, at + length)}`).join("")
      const scrubbed = HttpErrors.scrub(text, [key])
      Secrets.expectNoKey(scrubbed, key, "scrubbed")
      Secrets.expectNoKey(scrubbed.slice(0, cut), key, "scrubbed, then cut")
    }
  )

  it("issue 18.5: a provider's own message is kept when its error names only a kind (`{ error: \"SyntaxError\", message }`)", () => {
    const body = JSON.stringify({ error: "SyntaxError", message: "Unexpected token } in JSON at position 17", statusCode: 500 })
    expect(HttpErrors.fromResponse(response(500, body))).toStrictEqual(
      new AiModel.ProviderError({ model: "m", status: 500, reason: "SyntaxError: Unexpected token } in JSON at position 17" })
    )
    const fastify = JSON.stringify({ error: "Internal Server Error", message: "the GPU ran out of memory" })
    expect(HttpErrors.fromResponse(response(500, fastify)).message).toBe(
      "m: provider error (HTTP 500): Internal Server Error: the GPU ran out of memory"
    )
  })
})
