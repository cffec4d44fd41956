import { describe, expect, it } from "@effect/vitest"
import { FastCheck } from "effect"
import * as Tokenizer from "../../src/model/Tokenizer.js"

describe("Tokenizer", () => {
  it("counts a word per started four characters and each other visible character as one", () => {
    expect(Tokenizer.count("")).toBe(0)
    expect(Tokenizer.count(" \n\t ")).toBe(0)
    expect(Tokenizer.count("the")).toBe(1)
    expect(Tokenizer.count("tokenizer")).toBe(3)
    expect(Tokenizer.count("Summarise this, briefly.")).toBe(8)
    expect(Tokenizer.count("a—b")).toBe(3)
    expect(Tokenizer.count("x".repeat(400))).toBe(100)
    expect(Tokenizer.count("naïve café 42")).toBe(4)
  })

  it.prop(
    "a text counts as the sum of its whitespace-separated pieces (so a stream can count word by word)",
    [FastCheck.array(FastCheck.string({ maxLength: 12 }), { maxLength: 8 }), FastCheck.constantFrom(" ", "\n", "  \t")],
    ([parts, separator]) => {
      const text = parts.join(separator)
      const pieces = text.match(/\s*\S+/g) ?? []
      expect(Tokenizer.count(text)).toBe(pieces.reduce((sum, piece) => sum + Tokenizer.count(piece), 0))
      expect(Tokenizer.count(text)).toBe(parts.reduce((sum, part) => sum + Tokenizer.count(part), 0))
    }
  )
})
