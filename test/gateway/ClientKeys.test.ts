import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either } from "effect"
import * as ClientKeys from "../../src/gateway/ClientKeys.js"

const keys = (text: string) => Either.getOrThrowWith(ClientKeys.parse(text), (error) => new Error(error))

describe("ClientKeys", () => {
  it("parses a JSON array of keys, names and limits, and says what is wrong with a bad one", () => {
    const parsed = keys(`[{"key":"abcdefghijklmnop","name":"a","rpm":10,"tpm":1000},{"key":"qrstuvwxyz012345"}]`)
    expect(parsed.map(({ key: _, ...rest }) => rest)).toStrictEqual([
      { name: "a", requestsPerMinute: 10, tokensPerMinute: 1000 },
      { name: "client-2" }
    ])
    expect(String(parsed[0]!.key)).not.toContain("abcdefgh")
    expect(Either.getLeft(ClientKeys.parse("nope"))).toMatchObject({ value: expect.stringContaining("not JSON") })
    expect(Either.getLeft(ClientKeys.parse(`[{"key":"short"}]`))).toMatchObject({ value: expect.stringContaining("at least 16") })
    expect(Either.getLeft(ClientKeys.parse(`[{"key":"abcdefghijklmnop"},{"key":"abcdefghijklmnop"}]`))).toMatchObject({
      value: expect.stringContaining("twice")
    })
    expect(Either.getLeft(ClientKeys.parse(`[{"key":"abcdefghijklmnop","rpm":0}]`))).toMatchObject({ value: expect.stringContaining("rpm") })
  })

  it.effect("authenticates by the bearer key only, and limits each client by its own budget, with OpenAI's x-ratelimit-* headers", () =>
    Effect.gen(function*() {
      const clients = yield* ClientKeys.make(keys(`[{"key":"abcdefghijklmnop","name":"a","rpm":2,"tpm":100}]`))
      expect(clients.authenticate(undefined)).toBeUndefined()
      expect(clients.authenticate("Bearer abcdefghijklmnoq")).toBeUndefined()
      expect(clients.authenticate("abcdefghijklmnop")).toBeUndefined()
      const client = clients.authenticate("Bearer abcdefghijklmnop")!
      expect(client.name).toBe("a")
      const first = yield* client.admit({ requests: 1, tokens: 10 })
      yield* first!.settle({ requests: 1, tokens: 10 })
      expect(yield* client.headers).toMatchObject({
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "90"
      })
      // tokens over what is left: refused at once, with when it will fit
      const tooMany = yield* Effect.flip(client.admit({ requests: 1, tokens: 95 }))
      expect(tooMany).toMatchObject({ _tag: "ClientLimited", limit: "tokens" })
      expect(Duration.toSeconds(tooMany.retryAfter)).toBe(3)
      yield* client.admit({ requests: 1, tokens: 1 })
      const noRequests = yield* Effect.flip(client.admit({ requests: 1, tokens: 1 }))
      expect(noRequests).toMatchObject({ limit: "requests", headers: { "x-ratelimit-remaining-requests": "0" } })
    }))
})
