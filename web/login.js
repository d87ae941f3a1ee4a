// ccu: the staff login. POST /api/v1/auth/login sets the session cookie;
// then the page goes to the console or the dashboard by role.
(function () {
  'use strict';
  function destination(role) {
    return role === 'supervisor' || role === 'admin' ? '/dashboard' : '/console';
  }
  document.addEventListener('DOMContentLoaded', () => {
    const form = document.getElementById('login-form');
    const error = document.getElementById('login-error');
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      error.textContent = '';
      const button = document.getElementById('login-submit');
      button.disabled = true;
      try {
        const response = await fetch('/api/v1/auth/login', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          credentials: 'same-origin',
          body: JSON.stringify({
            username: form.username.value.trim(),
            password: form.password.value
          })
        });
        if (response.ok) {
          const body = await response.json();
          const next = new URLSearchParams(location.search).get('next');
          // Only our own pages: never an open redirect.
          location.assign(next === '/console' || next === '/dashboard' ? next : destination(body.user && body.user.role));
          return;
        }
        error.textContent = ccu.t(response.status === 429 ? 'login.limited' : response.status === 401 ? 'login.failed' : 'login.error');
        form.password.value = '';
        form.password.focus();
      } catch (e) {
        error.textContent = ccu.t('login.error');
      } finally {
        button.disabled = false;
      }
    });
  });
})();
