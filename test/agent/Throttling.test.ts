import { describe, expect, it } from "@effect/vitest"
import * as Throttling from "../../src/agent/Throttling.js"

describe("Throttling", () => {
  it("issue 17.9: a model is throttling the batch once half of its recent attempts were refused with a 429, not at the odd 429", () => {
    const throttling = Throttling.make()
    for (let i = 0; i < 10; i++) throttling.attempted("m", 0)
    throttling.refused("m", 0)
    // one 429 in ten attempts: the odd refusal
    expect(throttling.throttled("m", 0)).toBe(false)
    for (let i = 0; i < 4; i++) throttling.refused("m", 100)
    // five in ten: the provider is asking the batch to slow down
    expect(throttling.throttled("m", 100)).toBe(true)
    // each model on its own counts
    throttling.attempted("other", 100)
    expect(throttling.throttled("other", 100)).toBe(false)
    // forgotten once out of the 10 s window: new attempts answered meet no 429
    for (let i = 0; i < 4; i++) throttling.attempted("m", 10_000)
    expect(throttling.throttled("m", 10_000)).toBe(false)
  })
})
