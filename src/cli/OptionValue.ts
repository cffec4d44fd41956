/**
 * Option values of the `wiz` command line, parsed the way its help prints them, with errors
 * that name the option: `--timeout 30s` (help prints defaults with `Duration.format`, so
 * `30s`, `1m 30s`, `500ms` are accepted, as is Effect's own `30 seconds`), and whole numbers
 * that say which option wanted one (`--concurrency: "1.5" is not a whole number` instead of
 * the parser's `'1.5' is not a integer`), and choices that say which option wanted one.
 *
 * @example
 * ```ts
 * import { Duration, Option } from "effect"
 * import * as OptionValue from "wiz-effect/cli/OptionValue"
 *
 * OptionValue.parseDuration("1m 30s") // Option.some(Duration.seconds(90))
 * OptionValue.parseDuration("30 seconds") // Option.some(Duration.seconds(30))
 * ```
 *
 * @since 0.1.0
 */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import { Duration, Effect, Option } from "effect"

const nanosPer: Record<string, number> = {
  ns: 1,
  us: 1e3,
  "µs": 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
  d: 86_400e9,
  w: 604_800e9
}

const COMPACT = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w)\s*)+$/
const PIECE = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)/g

/**
 * A duration as a person writes it: `30s`, `500ms`, `2m`, `1h 30m`, `1m 30s` (what
 * `Duration.format` prints), `0`, or Effect's `30 seconds` / `500 millis`.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const trimmed = text.trim()
  if (trimmed === "0") return Option.some(Duration.zero)
  if (COMPACT.test(trimmed)) {
    let nanos = 0
    for (const [, amount, unit] of trimmed.matchAll(PIECE)) nanos += Number(amount) * nanosPer[unit!]!
    const whole = Math.round(nanos)
    return Option.some(whole % 1e6 === 0 ? Duration.millis(whole / 1e6) : Duration.nanos(BigInt(whole)))
  }
  return Duration.decodeUnknown(trimmed)
}

const invalid = (message: string) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(message)))

/**
 * `--NAME DURATION`, optional; `min: "positive"` refuses zero.
 *
 * @since 0.1.0
 * @category options
 */
export const duration = (name: string, min: "zero" | "positive", description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("DURATION"),
    Options.withDescription(description),
    Options.mapEffect((text) =>
      Option.match(parseDuration(text), {
        onNone: () => invalid(`--${name}: "${text}" is not a duration (write e.g. "30s", "500ms", "2m" or "10 seconds")`),
        onSome: (d) => (min === "positive" && Duration.toMillis(d) <= 0 ? invalid(`--${name} must be longer than 0`) : Effect.succeed(d))
      })
    ),
    Options.optional
  )

/**
 * `--NAME N`, a whole number of at least `min`.
 *
 * @since 0.1.0
 * @category options
 */
export const integer = (name: string, min: number) =>
  Options.text(name).pipe(
    Options.withPseudoName("N"),
    Options.mapEffect((text) => {
      const n = Number(text.trim())
      if (text.trim() === "" || !Number.isInteger(n)) return invalid(`--${name}: "${text}" is not a whole number`)
      return n >= min ? Effect.succeed(n) : invalid(`--${name} must be at least ${min} (got ${n})`)
    })
  )

/**
 * `--NAME N`, a whole number of at least `min`, optional, with its help text.
 *
 * @since 0.1.0
 * @category options
 */
export const optionalInteger = (name: string, min: number, description: string) =>
  integer(name, min).pipe(Options.withDescription(description), Options.optional)

/**
 * `--NAME VALUE`, optional: any text, shown in help as `--NAME PSEUDO` (`URL`, `VAR`, ...).
 *
 * @since 0.1.0
 * @category options
 */
export const optionalText = (name: string, pseudoName: string, description: string) =>
  Options.text(name).pipe(Options.withPseudoName(pseudoName), Options.withDescription(description), Options.optional)

/**
 * `--NAME N` or `--NAME WORD`: a whole number of at least `min`, or the one word `word`.
 *
 * @since 0.1.0
 * @category options
 */
export const integerOr = <W extends string>(name: string, min: number, word: W) =>
  Options.text(name).pipe(
    Options.withPseudoName(`N | ${word}`),
    Options.mapEffect((text): Effect.Effect<number | W, ValidationError.ValidationError> => {
      if (text.trim() === word) return Effect.succeed(word)
      const n = Number(text.trim())
      if (text.trim() === "" || !Number.isInteger(n)) return invalid(`--${name}: "${text}" is neither a whole number nor ${word}`)
      return n >= min ? Effect.succeed(n) : invalid(`--${name} must be at least ${min} (got ${n})`)
    })
  )

/**
 * `--NAME X`, a number between `min` and `max`.
 *
 * @since 0.1.0
 * @category options
 */
export const number = (name: string, min: number, max: number) =>
  Options.text(name).pipe(
    Options.withPseudoName("X"),
    Options.mapEffect((text) => {
      const x = Number(text.trim())
      if (text.trim() === "" || !Number.isFinite(x)) return invalid(`--${name}: "${text}" is not a number`)
      return x >= min && x <= max ? Effect.succeed(x) : invalid(`--${name} must be between ${min} and ${max} (got ${x})`)
    })
  )

/**
 * `--NAME`, a flag (false when absent).
 *
 * @since 0.1.0
 * @category options
 */
export const flag = (name: string, description: string) => Options.boolean(name).pipe(Options.withDescription(description))

/**
 * `--NAME WORD`, one of `choices`; anything else is refused naming the option and the choices
 * (the parser's own message names neither the option nor what was given).
 *
 * @since 0.1.0
 * @category options
 */
export const choice = <const C extends ReadonlyArray<string>>(name: string, choices: C) =>
  Options.text(name).pipe(
    Options.withPseudoName(choices.join(" | ")),
    Options.mapEffect((text): Effect.Effect<C[number], ValidationError.ValidationError> => {
      const chosen = choices.find((c) => c === text.trim())
      return chosen !== undefined
        ? Effect.succeed(chosen)
        : invalid(`--${name}: "${text}" is not ${choices.slice(0, -1).join(", ")}${choices.length > 1 ? " or " : ""}${choices.at(-1)}`)
    })
  )
