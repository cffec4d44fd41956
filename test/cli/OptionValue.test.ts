import { describe, expect, it } from "@effect/vitest"
import { Duration, Option } from "effect"
import * as OptionValue from "../../src/cli/OptionValue.js"

describe("OptionValue", () => {
  it("parseDuration accepts what the help prints (Duration.format) as well as Effect's own words", () => {
    const cases: ReadonlyArray<readonly [string, Duration.DurationInput]> = [
      ["30s", "30 seconds"],
      ["500ms", "500 millis"],
      ["2m", "2 minutes"],
      ["1h", "1 hour"],
      ["1m 30s", "90 seconds"],
      ["1s 500ms", "1500 millis"],
      ["1.5s", "1500 millis"],
      ["250us", "250 micros"],
      ["0", Duration.zero],
      ["30 seconds", "30 seconds"],
      ["500 millis", "500 millis"]
    ]
    for (const [text, expected] of cases) {
      expect([text, Option.map(OptionValue.parseDuration(text), Duration.unsafeToNanos)]).toEqual([
        text,
        Option.some(Duration.unsafeToNanos(expected))
      ])
    }
    // what the help prints for every default parses back to it
    for (const d of [Duration.seconds(30), Duration.millis(1500), Duration.minutes(2), Duration.millis(20)]) {
      const parsed = OptionValue.parseDuration(Duration.format(d))
      expect(Option.isSome(parsed) && Duration.equals(parsed.value, d)).toBe(true)
    }
  })

  it("parseDuration refuses what is not a duration", () => {
    for (const text of ["soon", "30", "s", "30 parsecs", "-1s", "1x"]) {
      expect([text, OptionValue.parseDuration(text)]).toEqual([text, Option.none()])
    }
  })
})
