/**
 * Graceful degradation that stays visible: a chain of tiers (primary model, secondary model, a
 * cached or static answer) tried in order, answering with the value *and* which tier gave it,
 * whether that is a degraded answer, and why every earlier tier failed. The seed's
 * `callAIWithFallback` hid all of that behind `'Unable to process request'` (seed bug 12).
 *
 * Which errors may fall through to the next tier is a predicate, `fallThrough`. By default every
 * error does except an `InvalidRequest` (a 400: the next model would refuse the same prompt, so
 * it fails at once). A `QuotaExhausted` on one provider does fall through: another provider has
 * its own quota. Defects and interruption never fall through.
 *
 * Several `AiModel` layers can be named as tiers: {@link models} builds each layer once in the
 * current `Scope` (sharing one `MemoMap`, so a dependency the layers have in common is built
 * once too), and {@link runModels} runs one program needing an `AiModel` against them.
 *
 * Why not Effect's `ExecutionPlan`: `Effect.withExecutionPlan` keeps only the last error, so
 * which tier answered and why the others failed is lost — the very thing this module is for —
 * and it provides each step's layer on every call instead of once. The loop over tiers is a few
 * lines of `catchAll`, so a first tier that succeeds costs one `map`.
 *
 * @example
 * ```ts
 * import { Effect, type Layer } from "effect"
 * import { AiModel, Fallback } from "wiz-effect"
 *
 * declare const primary: Layer.Layer<AiModel.AiModel>
 * declare const secondary: Layer.Layer<AiModel.AiModel>
 *
 * const ask = (prompt: string) =>
 *   Effect.flatMap(AiModel.AiModel, (model) =>
 *     model.generate(new AiModel.CompletionRequest({ prompt, maxTokens: 256 })))
 *
 * const program = Effect.gen(function* () {
 *   const models = yield* Fallback.models([
 *     { name: "primary", layer: primary },
 *     { name: "secondary", layer: secondary }
 *   ])
 *   const answered = yield* Fallback.runModels(models, ask("Summarise: ..."))
 *   // answered.tier: "primary" | "secondary"; answered.degraded; answered.failures
 *
 *   // or with a last, static tier that cannot fail:
 *   const orStatic = yield* Fallback.run([
 *     ...Fallback.modelTiers(models, Effect.map(ask("Summarise: ..."), (c) => c.text)),
 *     Fallback.fixed("static", "The service is busy; here is the last summary we have.")
 *   ])
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { Array as Arr, Context, Data, Effect, Inspectable, Layer, Predicate } from "effect"
import type { Scope } from "effect"
import { AiModel } from "../model/AiModel.js"

/**
 * One step of the chain: a name for reports and the effect that answers.
 *
 * @since 0.1.0
 * @category models
 */
export interface Tier<out A, out E = never, out R = never> {
  readonly name: string
  readonly run: Effect.Effect<A, E, R>
}

/**
 * @since 0.1.0
 */
export declare namespace Tier {
  /**
   * Any tier; every `Tier<A, E, R>` is one.
   *
   * @since 0.1.0
   * @category models
   */
  export type Any = Tier<unknown, unknown, unknown>
  /**
   * @since 0.1.0
   * @category models
   */
  export type Success<T extends Any> = T extends Tier<infer A, infer _E, infer _R> ? A : never
  /**
   * @since 0.1.0
   * @category models
   */
  export type Error<T extends Any> = T extends Tier<infer _A, infer E, infer _R> ? E : never
  /**
   * @since 0.1.0
   * @category models
   */
  export type Context<T extends Any> = T extends Tier<infer _A, infer _E, infer R> ? R : never
}

/**
 * A tier that failed and fell through: its name and its error.
 *
 * @since 0.1.0
 * @category models
 */
export interface Failure<out E> {
  readonly tier: string
  readonly error: E
}

/**
 * What {@link run} answers: the value, the tier that gave it (`index` 0 is the primary),
 * `degraded` when it was not the primary, and the failures of the tiers before it, in order.
 *
 * @since 0.1.0
 * @category models
 */
export interface Answered<out A, out E> {
  readonly value: A
  readonly tier: string
  readonly index: number
  readonly degraded: boolean
  readonly failures: ReadonlyArray<Failure<E>>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<in E> {
  /** Whether an error may fall through to the next tier; `false` fails the chain at once. */
  readonly fallThrough?: (error: E) => boolean
}

/**
 * `fallThrough`: every error except one tagged `InvalidRequest`.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  fallThrough: (error: unknown): boolean => !Predicate.isTagged(error, "InvalidRequest")
} as const

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

const describe = (error: unknown): string => {
  const tag = Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" ? error._tag : undefined
  const message = Predicate.hasProperty(error, "message") && typeof error.message === "string" && error.message !== ""
    ? error.message
    : undefined
  if (tag !== undefined && message !== undefined) return `${tag}: ${message}`
  return message ?? tag ?? Inspectable.toStringUnknown(error, 0)
}

/**
 * Every tier failed with an error that may fall through; `failures` has one entry per tier, in
 * order. (A `Data.TaggedError`: its payload keeps the tiers' own error type.)
 *
 * @since 0.1.0
 * @category errors
 */
export class AllTiersFailed<out E> extends Data.TaggedError("AllTiersFailed")<{
  readonly failures: Arr.NonEmptyReadonlyArray<Failure<E>>
}> {
  override get message(): string {
    return `all ${this.failures.length} tiers failed: ` +
      this.failures.map((failure) => `${failure.tier} (${describe(failure.error)})`).join(", ")
  }
}

// -----------------------------------------------------------------------------
// constructors
// -----------------------------------------------------------------------------

/**
 * A named tier.
 *
 * @since 0.1.0
 * @category constructors
 */
export const tier = <A, E, R>(name: string, run: Effect.Effect<A, E, R>): Tier<A, E, R> => ({ name, run })

/**
 * A static answer that cannot fail: the last tier of a chain.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fixed = <A>(name: string, value: A): Tier<A> => ({ name, run: Effect.succeed(value) })

// -----------------------------------------------------------------------------
// running
// -----------------------------------------------------------------------------

/**
 * Tries the tiers in order and answers with the first success, saying which tier gave it and
 * why each earlier one failed. An error for which `fallThrough` is `false` fails the chain at
 * once with that error (later tiers never run); when every tier fails, {@link AllTiersFailed}.
 *
 * @since 0.1.0
 * @category combinators
 */
export const run = <Tiers extends Arr.NonEmptyReadonlyArray<Tier.Any>>(
  tiers: Tiers,
  options: Options<Tier.Error<Tiers[number]>> = {}
): Effect.Effect<
  Answered<Tier.Success<Tiers[number]>, Tier.Error<Tiers[number]>>,
  Tier.Error<Tiers[number]> | AllTiersFailed<Tier.Error<Tiers[number]>>,
  Tier.Context<Tiers[number]>
> => {
  type A = Tier.Success<Tiers[number]>
  type E = Tier.Error<Tiers[number]>
  type R = Tier.Context<Tiers[number]>
  const fallThrough: (error: E) => boolean = options.fallThrough ?? defaults.fallThrough
  // `Tiers` only widens what each tier's effect says it does; every element is a Tier<A, E, R>.
  const chain = tiers as ReadonlyArray<Tier<A, E, R>>
  const attempt = (
    index: number,
    failures: ReadonlyArray<Failure<E>>
  ): Effect.Effect<Answered<A, E>, E | AllTiersFailed<E>, R> => {
    const current = chain[index]!
    return Effect.catchAll(
      Effect.map(current.run, (value): Answered<A, E> => ({
        value,
        tier: current.name,
        index,
        degraded: index > 0,
        failures
      })),
      (error) => {
        if (!fallThrough(error)) return Effect.fail(error)
        const failed = Arr.append(failures, { tier: current.name, error })
        return index + 1 < chain.length
          ? attempt(index + 1, failed)
          : Effect.fail(new AllTiersFailed({ failures: failed }))
      }
    )
  }
  return attempt(0, [])
}

// -----------------------------------------------------------------------------
// AiModel layers as tiers
// -----------------------------------------------------------------------------

/**
 * An `AiModel` layer with the name it answers under.
 *
 * @since 0.1.0
 * @category models
 */
export interface ModelTier<out E = never, out R = never> {
  readonly name: string
  readonly layer: Layer.Layer<AiModel, E, R>
}

/**
 * A built model with its tier name.
 *
 * @since 0.1.0
 * @category models
 */
export interface NamedModel {
  readonly name: string
  readonly model: AiModel.Service
}

/**
 * Builds each model layer once, in order, in the current `Scope` (one `MemoMap` for all of them,
 * so a dependency they share is built once). A layer that fails to build fails this effect: a
 * misconfigured tier shows up at start, not as a fall-through on every call.
 *
 * @since 0.1.0
 * @category constructors
 */
export const models = <E, R>(
  tiers: Arr.NonEmptyReadonlyArray<ModelTier<E, R>>
): Effect.Effect<Arr.NonEmptyReadonlyArray<NamedModel>, E, R | Scope.Scope> =>
  Effect.flatMap(Layer.makeMemoMap, (memoMap) =>
    Effect.flatMap(Effect.scope, (scope) =>
      Effect.forEach(tiers, ({ layer, name }) =>
        Effect.map(
          Layer.buildWithMemoMap(layer, memoMap, scope),
          (context): NamedModel => ({ name, model: Context.get(context, AiModel) })
        ))))

/**
 * One tier per model, each running `self` with that model provided — to put in front of a
 * {@link fixed} tier in {@link run}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const modelTiers = <A, E, R>(
  named: Arr.NonEmptyReadonlyArray<NamedModel>,
  self: Effect.Effect<A, E, R>
): Arr.NonEmptyReadonlyArray<Tier<A, E, Exclude<R, AiModel>>> =>
  Arr.map(named, ({ model, name }) => tier(name, Effect.provideService(self, AiModel, model)))

/**
 * Runs `self` against the models in order with {@link run}.
 *
 * @since 0.1.0
 * @category combinators
 */
export const runModels = <A, E, R>(
  named: Arr.NonEmptyReadonlyArray<NamedModel>,
  self: Effect.Effect<A, E, R>,
  options: Options<E> = {}
): Effect.Effect<Answered<A, E>, E | AllTiersFailed<E>, Exclude<R, AiModel>> =>
  run(modelTiers(named, self), options)
