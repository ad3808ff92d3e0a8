// @ts-check
/**
 * Helpers every dashboard page's browser script uses. A page's inline script is this file
 * followed by the page's own script file, as one classic script (not a module): the functions
 * declared here are globals of the page, and each page's file keeps its own names inside one
 * function. (Biome reads every .js file as a module: biome.json tells it that these functions
 * are used by the page scripts that follow and that this "use strict" covers them too.)
 */
"use strict";

/** The page's credential is missing or was refused: the page asks for it again. */
class AuthError extends Error {}

/**
 * The element with this id, of this type (the page's own markup: missing is a bug).
 * @template {Element} T
 * @param {string} id
 * @param {{ new (): T, prototype: T }} type
 * @returns {T}
 */
function byIdAs(id, type) {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`#${id} is missing or not the expected element`);
  return found;
}

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function byId(id) {
  return byIdAs(id, HTMLElement);
}

/**
 * The first element under root matching selector, of this type.
 * @template {Element} T
 * @param {ParentNode} root
 * @param {string} selector
 * @param {{ new (): T, prototype: T }} type
 * @returns {T}
 */
function queryAs(root, selector, type) {
  const found = root.querySelector(selector);
  if (!(found instanceof type)) throw new Error(`${selector} is missing or not the expected element`);
  return found;
}

/**
 * Every element under root matching selector that is of this type.
 * @template {Element} T
 * @param {ParentNode} root
 * @param {string} selector
 * @param {{ new (): T, prototype: T }} type
 * @returns {T[]}
 */
function queryAllAs(root, selector, type) {
  /** @type {T[]} */
  const found = [];
  for (const e of root.querySelectorAll(selector)) if (e instanceof type) found.push(e);
  return found;
}

/**
 * A new element with this text (unless null or undefined) and class.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {unknown} [text]
 * @param {string} [cls]
 * @returns {HTMLElementTagNameMap[K]}
 */
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

/**
 * A table row of these cells.
 * @param {HTMLElement[]} cells
 */
function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c);
  return tr;
}

/**
 * Shows a message in the page's live region (#notice); empty text hides it.
 * @param {string} text
 * @param {boolean} [isError]
 */
function notice(text, isError) {
  const n = byId("notice");
  n.textContent = text || "";
  n.className = isError ? "notice error" : "notice";
}

/** @param {number} cents */
function dollars(cents) {
  return `$${(cents / 100).toFixed(2)}`;
}

/** @param {unknown} e */
function errorText(e) {
  return (e instanceof Error && e.message) || "Something went wrong.";
}

/**
 * How a page reaches its JSON API: the bearer credential kept in sessionStorage under
 * storageKey, the statuses that mean it was refused (it is then forgotten), and the messages
 * of the AuthError thrown when it is missing or refused without a message from the API.
 * @typedef {object} ApiAccess
 * @property {string} storageKey
 * @property {number[]} refusedStatuses
 * @property {string} missingMessage
 * @property {string} refusedMessage
 */

/**
 * Calls the API and returns its JSON answer; an error answer throws AuthError (credential
 * refused) or Error with the API's message.
 * @param {ApiAccess} access
 * @param {string} path
 * @param {{ method?: string, body?: string }} [init]
 * @returns {Promise<any>}
 */
async function callApi(access, path, init = {}) {
  const credential = sessionStorage.getItem(access.storageKey);
  if (!credential) throw new AuthError(access.missingMessage);
  /** @type {Record<string, string>} */
  const headers = { authorization: `Bearer ${credential}` };
  if (init.body) headers["content-type"] = "application/json";
  const res = await fetch(path, { method: init.method || "GET", headers, body: init.body });
  const data = await res.json().catch(() => null);
  const message = data?.error ? data.error.message : undefined;
  if (access.refusedStatuses.includes(res.status)) {
    sessionStorage.removeItem(access.storageKey);
    throw new AuthError(message ?? access.refusedMessage);
  }
  if (!res.ok) throw new Error(message ?? `request failed (${res.status})`);
  return data;
}

/**
 * On the form's submit, keeps the credential typed into input (trimmed; an empty one is ignored)
 * where access says, clears the input and the notice, and calls then.
 * @param {ApiAccess} access
 * @param {string} formId
 * @param {HTMLInputElement | HTMLTextAreaElement} input
 * @param {() => unknown} then
 */
function onCredentialSubmit(access, formId, input, then) {
  byId(formId).addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    sessionStorage.setItem(access.storageKey, value);
    input.value = "";
    notice("");
    then();
  });
}
