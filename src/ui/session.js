// The login session: a token from GET /api/v3/users/{name}/token, kept in sessionStorage only
// (gone with the tab; the password is never stored), and fetch with that token.

const STORAGE_KEY = 'herald.session';
/** Lifetime asked for a console token, in seconds. */
const TOKEN_TTL = 8 * 3600;

let session = restore();
let expiryTimer = null;
const endedListeners = [];

function restore() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORAGE_KEY));
    return stored && typeof stored.token === 'string' ? stored : null;
  } catch {
    return null;
  }
}

/** An answer of herald that is not a success, with its DRP error text. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** The first message of a DRP error body, or the HTTP status. */
async function errorText(response) {
  const body = await response.json().catch(() => null);
  const messages = body && Array.isArray(body.Messages) ? body.Messages : [];
  return messages.length ? messages.join('; ') : `herald answered ${response.status}`;
}

/** The current session ({user, token, expires}) or null. */
export function current() {
  return session;
}

/** Calls `listener(message)` whenever the session ends by itself (expiry, revoked token). */
export function onEnded(listener) {
  endedListeners.push(listener);
}

/** Ends the session and tells the listeners why. */
function end(message) {
  logout();
  for (const listener of endedListeners) listener(message);
}

/** Ends the session when the token's lifetime is over; true when it already is. */
export function watchExpiry() {
  clearTimeout(expiryTimer);
  if (!session || !session.expires) return false;
  const left = Date.parse(session.expires) - Date.now();
  if (left <= 0) {
    end('Your session has expired; log in again.');
    return true;
  }
  // setTimeout holds at most about 24.8 days.
  expiryTimer = setTimeout(watchExpiry, Math.min(left, 2 ** 31 - 1));
  return false;
}

/** Exchanges a user and password for a token; throws an Error with a message for the user. */
export async function login(user, password) {
  const raw = new TextEncoder().encode(`${user}:${password}`);
  const basic = btoa(String.fromCharCode(...raw));
  let response;
  try {
    response = await fetch(`/api/v3/users/${encodeURIComponent(user)}/token?ttl=${TOKEN_TTL}`, {
      headers: { Authorization: `Basic ${basic}` },
      cache: 'no-store',
    });
  } catch {
    throw new Error('herald cannot be reached; is it running?');
  }
  if (response.status === 401 || response.status === 403) {
    throw new Error('Wrong user name or password.');
  }
  if (!response.ok) throw new Error(await errorText(response));
  const body = await response.json();
  session = { user, token: body.Token, expires: body.Info && body.Info.Expires };
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  watchExpiry();
  return session;
}

/** Forgets the token. */
export function logout() {
  clearTimeout(expiryTimer);
  session = null;
  sessionStorage.removeItem(STORAGE_KEY);
}

/** fetch with the session's token; an expired or revoked token ends the session. */
export async function api(path, options = {}) {
  if (!session) throw new ApiError('Log in to continue.', 401);
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${session.token}` },
    cache: 'no-store',
  });
  if (response.ok) return response;
  const text = await errorText(response);
  if (response.status === 401 || (response.status === 403 && /token/.test(text))) {
    end(/expired/.test(text)
      ? 'Your session has expired; log in again.'
      : `Your session is no longer valid (${text}); log in again.`);
  }
  throw new ApiError(text, response.status);
}

/** GET `path` and its JSON body. */
export async function getJson(path) {
  const response = await api(path);
  return response.json();
}

/** The websocket URL of this origin, authenticated with the session's token. */
export function websocketUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/api/v3/ws?token=${encodeURIComponent(session ? session.token : '')}`;
}
