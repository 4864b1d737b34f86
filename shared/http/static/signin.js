// Sign-in for the vsp pages (served at /static/signin.js by every service with a page).
//
// The account name and password go to this service's POST /api/auth/token (the OAuth2 password
// form); the token is kept in sessionStorage, for this tab only, and sent as
// "Authorization: Bearer" by VspSignIn.fetch. Never a cookie: no other site can make a visitor's
// browser send it. A page may also take an API key instead (data-allow-key on its container).
// Any 401 to a signed-in request means the token expired or was revoked: the page signs out and
// says so. Text from the server is shown with textContent only.
var VspSignIn = (function () {
  "use strict";
  var STORE = "vsp-sign-in";
  var EXPIRED = "Your sign-in has expired or is no longer valid: sign in again.";
  var listeners = [];
  var box = null;
  var apiBase = "";
  var allowKey = false;
  var pending = "";
  var current = load();

  function load() {
    var saved = null;
    try { saved = JSON.parse(window.sessionStorage.getItem(STORE) || "null"); } catch (e) { saved = null; }
    if (!saved || typeof saved.token !== "string" || typeof saved.name !== "string") { return null; }
    if (saved.expiresAt && saved.expiresAt <= Date.now()) {
      window.sessionStorage.removeItem(STORE);
      pending = EXPIRED;
      return null;
    }
    return saved;
  }

  function token() { return current ? current.token : null; }
  function name() { return current ? current.name : null; }

  function headers(extra) {
    var all = {};
    Object.keys(extra || {}).forEach(function (key) { all[key] = extra[key]; });
    if (current) { all.Authorization = "Bearer " + current.token; }
    return all;
  }

  // The page calls this with every answer to a request that carried the token.
  function check(response, sentWith) {
    if (response.status === 401 && current && current.token === sentWith) { signOut(EXPIRED); }
    return response;
  }

  function signedFetch(url, options) {
    var init = {};
    Object.keys(options || {}).forEach(function (key) { init[key] = options[key]; });
    init.headers = headers(init.headers);
    var sentWith = token();
    return fetch(url, init).then(function (response) { return check(response, sentWith); });
  }

  function notify() { listeners.forEach(function (listener) { listener(current); }); }
  function onChange(listener) { listeners.push(listener); }

  function keep(value, message) {
    current = value;
    if (value) {
      window.sessionStorage.setItem(STORE, JSON.stringify(value));
    } else {
      window.sessionStorage.removeItem(STORE);
    }
    render(message || "");
    notify();
  }

  function signOut(message) { keep(null, message); }

  function detailOf(response) {
    return response.json().catch(function () { return {}; }).then(function (body) {
      var detail = typeof body.detail === "string" ? body.detail : response.statusText;
      return detail || "HTTP " + response.status;
    });
  }

  function whoIs(credential) {
    return fetch(apiBase + "api/me", { headers: { Authorization: "Bearer " + credential } });
  }

  function signIn(accountName, password) {
    var form = new URLSearchParams({ grant_type: "password", username: accountName, password: password });
    return fetch(apiBase + "api/auth/token", { method: "POST", body: form }).then(function (response) {
      if (!response.ok) {
        return detailOf(response).then(function (detail) { throw new Error(detail); });
      }
      return response.json().then(function (body) {
        keep({
          token: body.access_token,
          name: accountName,
          expiresAt: Date.now() + (body.expires_in || 0) * 1000,
        });
      });
    });
  }

  function useKey(key) {
    return whoIs(key).then(function (response) {
      if (!response.ok) {
        return detailOf(response).then(function (detail) { throw new Error(detail); });
      }
      return response.json().then(function (me) { keep({ token: key, name: me.name, expiresAt: 0 }); });
    });
  }

  function element(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (key) { node[key] = props[key]; });
    (children || []).forEach(function (child) { node.append(child); });
    return node;
  }

  function field(label, props) {
    return element("label", {}, [label + " ", element("input", props)]);
  }

  function failed(error) {
    var message = box.querySelector("#signin-error");
    message.textContent = "Sign-in failed: " + error.message;
    message.hidden = false;
  }

  function signedOutForm(message) {
    var form = element("form", { id: "signin-form" }, [
      field("Account", { id: "signin-name", name: "username", autocomplete: "username", required: true }),
      field("Password", {
        id: "signin-password", name: "password", type: "password",
        autocomplete: "current-password", required: true,
      }),
      element("button", { id: "signin-submit", type: "submit", textContent: "Sign in" }),
    ]);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      signIn(form.querySelector("#signin-name").value.trim(), form.querySelector("#signin-password").value)
        .catch(failed);
    });
    var parts = [form];
    if (allowKey) {
      var keyForm = element("form", { id: "signin-key-form" }, [
        field("API key", { id: "signin-key", type: "password", autocomplete: "off", required: true }),
        element("button", { id: "signin-key-submit", type: "submit", textContent: "Use the key" }),
      ]);
      keyForm.addEventListener("submit", function (event) {
        event.preventDefault();
        useKey(keyForm.querySelector("#signin-key").value.trim()).catch(failed);
      });
      parts.push(element("details", {}, [element("summary", { textContent: "Or use an API key" }), keyForm]));
    }
    parts.push(element("p", { id: "signin-error", className: "error", hidden: !message, textContent: message }));
    return parts;
  }

  function render(message) {
    if (!box) { return; }
    if (current) {
      var out = element("button", { id: "sign-out", type: "button", textContent: "Sign out" });
      out.addEventListener("click", function () { signOut(""); });
      box.replaceChildren(
        element("span", { id: "signed-in-as", textContent: "signed in as " + current.name }), " ", out
      );
    } else {
      box.replaceChildren.apply(box, signedOutForm(message));
    }
  }

  // Show the form (or who is signed in) in `container`; `base` is where /api/auth/token is
  // ("" or "/prefix/", ending in "/"). A kept token is checked at once, so a stale one says so.
  function mount(container, base) {
    box = container;
    apiBase = base || "";
    allowKey = container.dataset.allowKey === "true";
    render(pending);
    if (current) { signedFetch(apiBase + "api/me").catch(function () {}); }
  }

  return {
    mount: mount, token: token, name: name, headers: headers, fetch: signedFetch,
    check: check, signOut: signOut, onChange: onChange,
  };
})();
