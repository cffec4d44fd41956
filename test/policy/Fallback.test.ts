import { describe, expect, it } from "@effect/vitest"
import { Array as Arr, Effect, Exit, FastCheck as fc, Layer, Stream } from "effect"
import * as AiModel from "../../src/model/AiModel.js"
import * as Fallback from "../../src/policy/Fallback.js"

const overloaded = new AiModel.Overloaded({ model: "primary-model" })
const rateLimited = new AiModel.RateLimited({ model: "secondary-model", limit: "requests" })
const tooLong = new AiModel.InvalidRequest({ model: "primary-model", reason: "prompt too long" })
const quota = new AiModel.QuotaExhausted({ model: "primary-model", reason: "insufficient_quota" })

/** A tier body that counts its runs and then answers or fails as told. */
const counted = <A, E>(outcome: Effect.Effect<A, E>) => {
  const calls = { count: 0 }
  const run = Effect.suspend(() => {
    calls.count++
    return outcome
  })
  return { calls, run }
}

const request = new AiModel.CompletionRequest({ prompt: "Summarise: the report", maxTokens: 16 })
const generate = Effect.flatMap(AiModel.AiModel, (model) => model.generate(request))

/** A small inline model: fails with `fail` while `failing()` says so, else answers with its name. */
const testModel = (name: string, failing: () => AiModel.ModelError | undefined): AiModel.AiModel.Service => ({
  name,
  generate: (req) =>
    Effect.suspend(() => {
      const error = failing()
      return error === undefined
        ? Effect.succeed(
          new AiModel.Completion({
            text: `${name}: ${req.prompt}`,
            finishReason: "stop",
            usage: new AiModel.Usage({ promptTokens: 3, completionTokens: 2 }),
            model: name
          })
        )
        : Effect.fail(error)
    }),
  stream: () => Stream.empty
})

describe("Fallback", () => {
  it.effect("reports the tier that answered and every earlier failure, in order", () =>
    Effect.gen(function*() {
      const answered = yield* Fallback.run([
        Fallback.tier("primary", Effect.fail(overloaded)),
        Fallback.tier("secondary", Effect.fail(rateLimited)),
        Fallback.tier("tertiary", Effect.succeed("third answer"))
      ])
      expect(answered).toStrictEqual({
        value: "third answer",
        tier: "tertiary",
        index: 2,
        degraded: true,
        failures: [{ tier: "primary", error: overloaded }, { tier: "secondary", error: rateLimited }]
      })
    }))

  it.effect("a primary that answers is not degraded and later tiers never run", () =>
    Effect.gen(function*() {
      const secondary = counted(Effect.succeed("second"))
      const answered = yield* Fallback.run([
        Fallback.tier("primary", Effect.succeed("first")),
        Fallback.tier("secondary", secondary.run)
      ])
      expect(answered).toStrictEqual({ value: "first", tier: "primary", index: 0, degraded: false, failures: [] })
      expect(secondary.calls.count).toBe(0)
    }))

  it.effect("seed bug 12: a degraded answer says so (tier, degraded, why) instead of 'Unable to process request'", () =>
    Effect.gen(function*() {
      const answered = yield* Fallback.run([
        Fallback.tier("primary", Effect.fail(overloaded)),
        Fallback.tier("secondary", Effect.fail(rateLimited)),
        Fallback.fixed("cached", "last known summary")
      ])
      expect(answered.value).toBe("last known summary")
      expect(answered.tier).toBe("cached")
      expect(answered.index).toBe(2)
      expect(answered.degraded).toBe(true)
      expect(answered.failures.map(({ error, tier }) => `${tier}: ${error.message}`)).toStrictEqual([
        "primary: primary-model: overloaded",
        "secondary: secondary-model: rate limited on requests"
      ])
    }))

  it.effect("pitfall 'retrying a 400': InvalidRequest stops the chain at once and later tiers never run", () =>
    Effect.gen(function*() {
      const secondary = counted(Effect.succeed("second"))
      const last = counted(Effect.succeed("static"))
      const exit = yield* Effect.exit(Fallback.run([
        Fallback.tier("primary", Effect.fail(tooLong)),
        Fallback.tier("secondary", secondary.run),
        Fallback.tier("static", last.run)
      ]))
      expect(exit).toStrictEqual(Exit.fail(tooLong))
      expect(secondary.calls.count).toBe(0)
      expect(last.calls.count).toBe(0)
    }))

  it.effect("a QuotaExhausted on one provider falls through to the next by default", () =>
    Effect.gen(function*() {
      const answered = yield* Fallback.run([
        Fallback.tier("primary", Effect.fail(quota)),
        Fallback.tier("secondary", Effect.succeed("other provider"))
      ])
      expect(answered).toStrictEqual({
        value: "other provider",
        tier: "secondary",
        index: 1,
        degraded: true,
        failures: [{ tier: "primary", error: quota }]
      })
    }))

  it.effect("fallThrough decides which errors fall through: the first one refused stops the chain", () =>
    Effect.gen(function*() {
      const last = counted(Effect.succeed("static"))
      const exit = yield* Effect.exit(Fallback.run(
        [
          Fallback.tier("primary", Effect.fail(overloaded)),
          Fallback.tier("secondary", Effect.fail(rateLimited)),
          Fallback.tier("static", last.run)
        ],
        { fallThrough: (error) => error._tag === "Overloaded" }
      ))
      expect(exit).toStrictEqual(Exit.fail(rateLimited))
      expect(last.calls.count).toBe(0)
    }))

  it.effect("every tier failing gives AllTiersFailed with each failure, and a message naming each tier and why", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Fallback.run([
        Fallback.tier("primary", Effect.fail(overloaded)),
        Fallback.tier("secondary", Effect.fail(rateLimited)),
        Fallback.tier("last", Effect.fail("no cached answer"))
      ]))
      const allFailed = error instanceof Fallback.AllTiersFailed ? error : undefined
      expect(allFailed?._tag).toBe("AllTiersFailed")
      expect(allFailed?.failures).toStrictEqual([
        { tier: "primary", error: overloaded },
        { tier: "secondary", error: rateLimited },
        { tier: "last", error: "no cached answer" }
      ])
      expect(allFailed?.message).toBe(
        "all 3 tiers failed: primary (Overloaded: primary-model: overloaded), " +
          "secondary (RateLimited: secondary-model: rate limited on requests), last (no cached answer)"
      )
    }))

  it.effect("a fixed tier answers its value and cannot fail", () =>
    Effect.gen(function*() {
      const answered = yield* Fallback.run([Fallback.fixed("static", 42)])
      expect(answered).toStrictEqual({ value: 42, tier: "static", index: 0, degraded: false, failures: [] })
    }))

  it.effect("a defect is not a fall-through error: it ends the chain and later tiers never run", () =>
    Effect.gen(function*() {
      const secondary = counted(Effect.succeed("second"))
      const exit = yield* Effect.exit(Fallback.run([
        Fallback.tier("primary", Effect.die("bug")),
        Fallback.tier("secondary", secondary.run)
      ]))
      expect(exit).toStrictEqual(Exit.die("bug"))
      expect(secondary.calls.count).toBe(0)
    }))

  it.effect.prop(
    "invariant: the first success answers, the tiers before it are its failures, the tiers after it never run",
    { outcomes: fc.array(fc.boolean(), { minLength: 1, maxLength: 6 }) },
    ({ outcomes }) =>
      Effect.gen(function*() {
        const runs: Array<number> = []
        const tiers = outcomes.map((ok, i) =>
          Fallback.tier(
            `t${i}`,
            Effect.suspend(() => {
              runs.push(i)
              return ok ? Effect.succeed(i) : Effect.fail(overloaded)
            })
          )
        )
        const exit = yield* Effect.exit(Fallback.run([tiers[0]!, ...tiers.slice(1)]))
        const first = outcomes.indexOf(true)
        const failure = (i: number) => ({ tier: `t${i}`, error: overloaded })
        if (first === -1) {
          expect(exit).toStrictEqual(Exit.fail(new Fallback.AllTiersFailed({ failures: Arr.makeBy(outcomes.length, failure) })))
          expect(runs).toStrictEqual(outcomes.map((_, i) => i))
        } else {
          expect(exit).toStrictEqual(Exit.succeed({
            value: first,
            tier: `t${first}`,
            index: first,
            degraded: first > 0,
            failures: Array.from({ length: first }, (_, i) => failure(i))
          }))
          expect(runs).toStrictEqual(Array.from({ length: first + 1 }, (_, i) => i))
        }
      })
  )

  describe("AiModel layers as tiers", () => {
    /** Two model layers sharing one dependency; every build and release is counted. */
    const setup = () => {
      const builds = { shared: 0, primary: 0, secondary: 0, released: 0 }
      const primaryDown = { value: false }
      class Shared extends Effect.Tag("test/Shared")<Shared, { readonly region: string }>() {}
      const shared = Layer.effect(Shared, Effect.sync(() => (builds.shared++, { region: "eu" })))
      const primary = Layer.scoped(
        AiModel.AiModel,
        Effect.gen(function*() {
          const { region } = yield* Shared
          builds.primary++
          yield* Effect.addFinalizer(() => Effect.sync(() => builds.released++))
          return testModel(`primary-${region}`, () => primaryDown.value ? overloaded : undefined)
        })
      ).pipe(Layer.provide(shared))
      const secondary = Layer.effect(
        AiModel.AiModel,
        Effect.map(Shared, ({ region }) => {
          builds.secondary++
          return testModel(`secondary-${region}`, () => undefined)
        })
      ).pipe(Layer.provide(shared))
      return { builds, primary, primaryDown, secondary }
    }

    it.effect("two named AiModel layers: each built once across many calls, degraded calls reported", () =>
      Effect.gen(function*() {
        const { builds, primary, primaryDown, secondary } = setup()
        const tiers: Array<string> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const models = yield* Fallback.models([
            { name: "primary", layer: primary },
            { name: "secondary", layer: secondary }
          ])
          expect(models.map(({ model, name }) => [name, model.name])).toStrictEqual([
            ["primary", "primary-eu"],
            ["secondary", "secondary-eu"]
          ])
          for (let i = 0; i < 10; i++) {
            primaryDown.value = i % 3 === 0
            const answered = yield* Fallback.runModels(models, generate)
            tiers.push(`${answered.tier}/${answered.value.model}/${answered.failures.length}`)
          }
          expect(builds).toStrictEqual({ shared: 1, primary: 1, secondary: 1, released: 0 })
        }))
        expect(tiers).toStrictEqual([
          "secondary/secondary-eu/1",
          "primary/primary-eu/0",
          "primary/primary-eu/0",
          "secondary/secondary-eu/1",
          "primary/primary-eu/0",
          "primary/primary-eu/0",
          "secondary/secondary-eu/1",
          "primary/primary-eu/0",
          "primary/primary-eu/0",
          "secondary/secondary-eu/1"
        ])
        expect(builds.released).toBe(1)
      }))

    it.effect("model tiers followed by a fixed tier: the static answer says which models failed", () =>
      Effect.gen(function*() {
        const down = (name: string) =>
          Layer.succeed(AiModel.AiModel, testModel(name, () => new AiModel.Unavailable({ model: name, reason: "ECONNREFUSED" })))
        const answered = yield* Effect.scoped(Effect.gen(function*() {
          const models = yield* Fallback.models([
            { name: "primary", layer: down("a") },
            { name: "secondary", layer: down("b") }
          ])
          return yield* Fallback.run([
            ...Fallback.modelTiers(models, Effect.map(generate, (completion) => completion.text)),
            Fallback.fixed("static", "service busy")
          ])
        }))
        expect(answered).toStrictEqual({
          value: "service busy",
          tier: "static",
          index: 2,
          degraded: true,
          failures: [
            { tier: "primary", error: new AiModel.Unavailable({ model: "a", reason: "ECONNREFUSED" }) },
            { tier: "secondary", error: new AiModel.Unavailable({ model: "b", reason: "ECONNREFUSED" }) }
          ]
        })
      }))

    it.effect("a model layer that fails to build fails Fallback.models at start", () =>
      Effect.gen(function*() {
        const broken = Layer.fail(new AiModel.Unavailable({ model: "b", reason: "no API key" }))
        const exit = yield* Effect.exit(Effect.scoped(Fallback.models([
          { name: "primary", layer: Layer.succeed(AiModel.AiModel, testModel("a", () => undefined)) },
          { name: "secondary", layer: broken }
        ])))
        expect(exit).toStrictEqual(Exit.fail(new AiModel.Unavailable({ model: "b", reason: "no API key" })))
      }))
  })
})
