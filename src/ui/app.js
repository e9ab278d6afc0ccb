// The console's shell: login, the page router (#/events, #/connections, #/health, #/objects),
// the header's connection state, and the default-password warning.

import { $, say } from './dom.js';
import * as session from './session.js';
import * as events from './events.js';
import * as connections from './connections.js';
import * as health from './health.js';
import * as objects from './objects.js';

const PAGES = {
  events: { title: 'Events', show() {}, hide() {} },
  connections: { title: 'Connections', ...connections },
  health: { title: 'Health', ...health },
  objects: { title: 'Objects', ...objects },
};
let active = null;

function showOnly(id) {
  for (const page of document.querySelectorAll('.page')) page.hidden = page.id !== id;
}

function showLogin(message) {
  if (active) PAGES[active].hide();
  active = null;
  document.body.dataset.session = 'out';
  document.title = 'Log in · herald';
  $('banner').hidden = true;
  showOnly('page-login');
  say($('login-message'), message);
  $('login-password').value = '';
  $(message || $('login-user').value ? 'login-password' : 'login-user').focus();
}

function route() {
  if (!session.current()) {
    showLogin($('login-message').textContent);
    return;
  }
  const name = (/^#\/(\w+)/.exec(location.hash) || [])[1];
  if (!PAGES[name]) {
    location.replace('#/events');
    return;
  }
  if (active === name) return;
  if (active) PAGES[active].hide();
  active = name;
  showOnly(`page-${name}`);
  document.title = `${PAGES[name].title} · herald`;
  for (const link of document.querySelectorAll('.nav a')) {
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  PAGES[name].show();
}

async function warnAboutTheAdminPassword() {
  try {
    const info = await session.getJson('/api/v3/info');
    const banner = $('banner');
    if (info.DefaultPassword) {
      banner.textContent = 'Anyone can log in: the admin rocketskates still has DRP\'s default password '
        + 'r0cketsk8ts. Start herald with --admin-password, or change it with '
        + 'PUT /api/v3/users/rocketskates/password.';
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  } catch {
    // The pages say when herald cannot be reached.
  }
}

function begin() {
  const current = session.current();
  document.body.dataset.session = 'in';
  $('user').textContent = current.user;
  say($('login-message'), '');
  events.start();
  warnAboutTheAdminPassword();
  route();
}

session.onEnded((message) => {
  events.stop();
  showLogin(message);
});

$('login-form').addEventListener('submit', async (submit) => {
  submit.preventDefault();
  const user = $('login-user').value.trim();
  const password = $('login-password').value;
  if (!user || !password) {
    say($('login-message'), 'Enter a user name and a password.');
    return;
  }
  const button = $('login-submit');
  button.disabled = true;
  try {
    await session.login(user, password);
    $('login-password').value = '';
    begin();
  } catch (failure) {
    say($('login-message'), failure.message);
    $('login-password').select();
  } finally {
    button.disabled = false;
  }
});

$('logout').addEventListener('click', () => {
  events.stop();
  session.logout();
  showLogin('You are logged out.');
});

$('skip').addEventListener('click', (click) => {
  click.preventDefault();
  $('main').focus();
});

window.addEventListener('hashchange', route);

if (session.current() && !session.watchExpiry()) begin();
else if (!session.current()) showLogin('');
