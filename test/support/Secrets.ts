/**
 * A fresh random API key per test run, and the check that it leaked nowhere. The key is not
 * `sk-`-shaped, so only the scrubbing of the secret itself can keep it out (the credential
 * pattern would catch an `sk-` key by its shape alone). Any run of 8 of its characters counts
 * as the key: `expectNoKey` fails on the key and on every 8-character piece of it.
 */
import { expect } from "@effect/vitest"
import { randomInt } from "node:crypto"

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

/** 40 random letters and digits. */
export const freshKey = (): string => Array.from({ length: 40 }, () => alphabet[randomInt(alphabet.length)]).join("")

/** Every 8-character piece of `key`. */
export const pieces = (key: string): ReadonlyArray<string> =>
  Array.from({ length: key.length - 7 }, (_, i) => key.slice(i, i + 8))

/** Fails when `text` holds the key or any 8-character piece of it, naming `where`. */
export const expectNoKey = (text: string, key: string, where = "text"): void => {
  const found = pieces(key).find((piece) => text.includes(piece))
  expect(found, `${where} holds a piece of the key: ${JSON.stringify(text.slice(0, 400))}`).toBeUndefined()
}
