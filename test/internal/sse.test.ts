import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import * as Sse from "../../src/internal/sse.js"

const encoder = new TextEncoder()

/** Decodes `bytes` cut at `cuts` (byte offsets), returning the events or the first error. */
const decodeCut = (bytes: Uint8Array, cuts: ReadonlyArray<number>, maxLineLength = 1 << 20) => {
  const decoder = new Sse.Decoder(maxLineLength)
  const out: Array<Sse.Event> = []
  let at = 0
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b)) {
    const error = decoder.push(bytes.subarray(at, cut), out)
    if (error !== undefined) return error
    at = cut
  }
  const error = decoder.push(bytes.subarray(at), out) ?? decoder.end(out)
  return error ?? out
}

describe("sse (internal)", () => {
  it("decodes data, event and comment lines; a blank line dispatches; data lines join with a newline", () => {
    const body = ": keep-alive\n\ndata: {\"a\":1}\n\nevent: error\ndata: line one\ndata: line two\nid: 7\nretry: 100\n\ndata\n\n"
    expect(decodeCut(encoder.encode(body), [])).toStrictEqual([
      { event: "message", data: "{\"a\":1}" },
      { event: "error", data: "line one\nline two" },
      { event: "message", data: "" }
    ])
  })

  it("LF, CRLF and CR all end a line, a CRLF cut between its CR and LF included; a BOM is dropped", () => {
    const body = "\uFEFFdata: a\r\n\r\ndata: b\r\rdata: c\n\n"
    const bytes = encoder.encode(body)
    const expected = [{ event: "message", data: "a" }, { event: "message", data: "b" }, { event: "message", data: "c" }]
    expect(decodeCut(bytes, [])).toStrictEqual(expected)
    // cut right after each CR
    const crs = [...bytes.keys()].filter((i) => bytes[i] === 13).map((i) => i + 1)
    expect(decodeCut(bytes, crs)).toStrictEqual(expected)
  })

  it("a last event without its blank line is still dispatched when the body ends (servers forget it)", () => {
    expect(decodeCut(encoder.encode("data: [DONE]"), [])).toStrictEqual([{ event: "message", data: "[DONE]" }])
    expect(decodeCut(encoder.encode("data: [DONE]\n"), [])).toStrictEqual([{ event: "message", data: "[DONE]" }])
  })

  it("hostile server: a line longer than the limit is refused, whether it arrives whole or a byte at a time", () => {
    const long = encoder.encode(`data: ${"x".repeat(100)}\n\n`)
    expect(decodeCut(long, [], 50)).toBe("an event-stream line is longer than 50 characters")
    expect(decodeCut(long, Array.from({ length: long.length }, (_, i) => i), 50)).toBe(
      "an event-stream line is longer than 50 characters"
    )
    // a line that never ends is refused as soon as it passes the limit, before the body ends
    const decoder = new Sse.Decoder(50)
    expect(decoder.push(encoder.encode("data: " + "y".repeat(60)), [])).toBe("an event-stream line is longer than 50 characters")
  })

  const text = fc.string({ unit: fc.constantFrom("a", "é", "€", "😀", "中", " ", ":", "\\", "\"", "\n"), maxLength: 40 })

  it.prop(
    "chunks cut anywhere (mid-line, mid-UTF-8 character, mid-CRLF) decode to the same events as the whole body",
    [fc.array(fc.tuple(fc.constantFrom("message", "error", "delta"), fc.array(text, { minLength: 1, maxLength: 3 })), { maxLength: 6 }),
      fc.constantFrom("\n", "\r\n", "\r"),
      fc.array(fc.nat(), { maxLength: 20 })],
    ([events, eol, rawCuts]) => {
      // A data value cannot hold a line end: each line of a value is its own data line.
      const body = events.map(([event, values]) =>
        `${event === "message" ? "" : `event: ${event}${eol}`}${values.flatMap((v) => v.split("\n")).map((v) => `data: ${v}${eol}`).join("")}${eol}`
      ).join("")
      const bytes = encoder.encode(body)
      const cuts = rawCuts.map((c) => (bytes.length === 0 ? 0 : c % (bytes.length + 1)))
      const whole = decodeCut(bytes, [])
      expect(decodeCut(bytes, cuts)).toStrictEqual(whole)
      expect(whole).toStrictEqual(events.map(([event, values]) => ({ event, data: values.flatMap((v) => v.split("\n")).join("\n") })))
    }
  )
})
