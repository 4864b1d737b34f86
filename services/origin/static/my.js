// "My videos": the signed-in account's videos (GET api/videos?mine=true) with their state, a
// privacy select that PATCHes the video, a link to play it, and delete (after a confirm).
// URLs are relative to the page's folder, as the player's are; text goes in by textContent.
(function () {
  "use strict";

  const root = location.pathname.replace(/my\/?$/, "");
  const table = document.getElementById("my");
  const body = document.getElementById("my-videos");
  const statusLine = document.getElementById("my-status");
  const rows = new Map();
  const PRIVACY = ["public", "unlisted", "private"];
  const SETTLED = ["ready", "failed", "deleted"];
  let timer = null;

  function say(message, isError) {
    statusLine.textContent = message;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  async function call(method, path, body) {
    const options = { method };
    if (body !== undefined) {
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    const response = await VspSignIn.fetch(root + path, options);
    if (response.status === 204) return null;
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(typeof answer.detail === "string" ? answer.detail : "HTTP " + response.status);
    return answer;
  }

  function cell(child) {
    const td = document.createElement("td");
    td.append(child);
    return td;
  }

  function newRow(item) {
    const tr = document.createElement("tr");
    tr.dataset.id = item.id;
    const title = document.createElement("span");
    title.className = "title";
    const state = document.createElement("span");
    state.className = "state";
    const privacy = document.createElement("select");
    privacy.className = "privacy";
    privacy.setAttribute("aria-label", "Privacy");
    PRIVACY.forEach((value) => privacy.add(new Option(value, value)));
    privacy.addEventListener("change", () => changePrivacy(tr, privacy));
    const play = document.createElement("a");
    play.className = "play";
    play.textContent = "Play";
    play.href = root + "player?video=" + encodeURIComponent(item.id);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete";
    remove.textContent = "Delete";
    remove.addEventListener("click", () => deleteVideo(tr));
    tr.append(cell(title), cell(state), cell(privacy), cell(play), cell(remove));
    return tr;
  }

  function update(tr, item) {
    tr.querySelector(".title").textContent = item.title || item.filename || item.id;
    const progress = item.progress && item.progress.percent;
    const state = tr.querySelector(".state");
    state.textContent = item.state + (progress && !SETTLED.includes(item.state) ? " " + Math.round(progress) + "%" : "");
    state.dataset.state = item.state;
    const privacy = tr.querySelector(".privacy");
    if (!privacy.disabled && document.activeElement !== privacy) {
      privacy.value = item.privacy;
      privacy.dataset.saved = item.privacy;
    }
  }

  async function changePrivacy(tr, select) {
    const wanted = select.value;
    select.disabled = true;
    try {
      const video = await call("PATCH", "api/videos/" + encodeURIComponent(tr.dataset.id), { privacy: wanted });
      select.dataset.saved = video.privacy;
      select.value = video.privacy;
      say("“" + tr.querySelector(".title").textContent + "” is now " + video.privacy);
    } catch (error) {
      select.value = select.dataset.saved || "public";
      say("could not change the privacy: " + error.message, true);
    } finally {
      select.disabled = false;
    }
  }

  async function deleteVideo(tr) {
    const name = tr.querySelector(".title").textContent;
    if (!window.confirm("Delete “" + name + "”? This cannot be undone.")) return;
    try {
      await call("DELETE", "api/videos/" + encodeURIComponent(tr.dataset.id));
      rows.delete(tr.dataset.id);
      tr.remove();
      say("deleted “" + name + "”");
    } catch (error) {
      say("could not delete “" + name + "”: " + error.message, true);
    }
  }

  async function load() {
    clearTimeout(timer);
    if (!VspSignIn.token()) {
      rows.clear();
      body.replaceChildren();
      table.hidden = true;
      say("Sign in to see your videos.");
      return;
    }
    let page;
    try {
      page = await call("GET", "api/videos?mine=true&limit=100");
    } catch (error) {
      if (VspSignIn.token()) say("your videos are unavailable: " + error.message, true);
      return;
    }
    const seen = new Set();
    const ordered = page.items.map((item) => {
      seen.add(item.id);
      const tr = rows.get(item.id) || newRow(item);
      rows.set(item.id, tr);
      update(tr, item);
      return tr;
    });
    for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
    body.replaceChildren(...ordered);
    table.hidden = ordered.length === 0;
    say(page.total ? page.total + " video" + (page.total === 1 ? "" : "s") : "No videos yet: upload one.");
    // Videos still on their way are followed until they settle.
    if (page.items.some((item) => !SETTLED.includes(item.state))) timer = setTimeout(load, 3000);
  }

  window.vspMy = { load };
  VspSignIn.onChange(load);
  VspSignIn.mount(document.getElementById("account"), root);
  load();
})();
