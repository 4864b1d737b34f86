// "My videos": the signed-in account's videos (GET api/videos?mine=true) with their state, a
// privacy select that PATCHes the video, a link to play it, and delete (after a confirm).
// "Edit" opens a row under the video: title, description and tags saved with PATCH, a new run
// of its ladder (POST .../transcode, followed until it settles), a new poster (PUT .../poster,
// the image as the body) and its captions (GET .../captions, PUT and DELETE
// .../captions/{lang}, the .vtt or .srt file as the body). Every refusal shows the server's
// JSON error. URLs are relative to the page's folder, as the player's are; text goes in by
// textContent.
(function () {
  "use strict";

  const root = location.pathname.replace(/my\/?$/, "");
  const table = document.getElementById("my");
  const body = document.getElementById("my-videos");
  const statusLine = document.getElementById("my-status");
  const rows = new Map();
  const PRIVACY = ["public", "unlisted", "private"];
  const SETTLED = ["ready", "failed", "deleted"];
  const CAPTION_TYPES = { vtt: "text/vtt", srt: "application/x-subrip" };
  let timer = null;

  function say(message, isError) {
    statusLine.textContent = message;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function videoPath(tr, rest) {
    return "api/videos/" + encodeURIComponent(tr.dataset.id) + (rest || "");
  }

  // A JSON body, a file (sent as it is, with ``contentType``), or nothing.
  async function call(method, path, body, contentType) {
    const options = { method };
    if (body instanceof Blob) {
      options.headers = { "Content-Type": contentType || body.type || "application/octet-stream" };
      options.body = body;
    } else if (body !== undefined) {
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    const response = await VspSignIn.fetch(root + path, options);
    if (response.status === 204) return null;
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(typeof answer.detail === "string" ? answer.detail : "HTTP " + response.status);
    return answer;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function button(className, text, onClick) {
    const node = element("button", className, text);
    node.type = "button";
    node.addEventListener("click", onClick);
    return node;
  }

  function labelled(text, control) {
    const label = element("label", "field");
    label.append(element("span", "", text), control);
    return label;
  }

  function cell(child) {
    const td = document.createElement("td");
    td.append(child);
    return td;
  }

  function titleOf(tr) {
    return tr.querySelector(".title").textContent;
  }

  function newRow(item) {
    const tr = document.createElement("tr");
    tr.dataset.id = item.id;
    const privacy = element("select", "privacy");
    privacy.setAttribute("aria-label", "Privacy");
    PRIVACY.forEach((value) => privacy.add(new Option(value, value)));
    privacy.addEventListener("change", () => changePrivacy(tr, privacy));
    const play = element("a", "play", "Play");
    play.href = root + "player?video=" + encodeURIComponent(item.id);
    tr.append(
      cell(element("span", "title")),
      cell(element("span", "state")),
      cell(privacy),
      cell(play),
      cell(button("edit", "Edit", () => toggleManage(tr))),
      cell(button("delete", "Delete", () => deleteVideo(tr))),
    );
    tr.manage = newManageRow(tr);
    return tr;
  }

  // The row under a video that edits it; hidden until "Edit".
  function newManageRow(tr) {
    const manage = element("tr", "manage");
    manage.dataset.for = tr.dataset.id;
    manage.hidden = true;
    const td = document.createElement("td");
    td.colSpan = 6;

    const form = element("form", "edit-form");
    const title = element("input", "edit-title");
    title.maxLength = 200;
    title.required = true;
    const description = element("textarea", "edit-description");
    description.rows = 3;
    description.maxLength = 5000;
    const tags = element("input", "edit-tags");
    tags.placeholder = "comma, separated";
    const save = element("button", "save", "Save");
    save.type = "submit";
    form.append(labelled("Title", title), labelled("Description", description), labelled("Tags", tags), save);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      saveDetails(tr);
    });

    const ladder = element("div", "ladder");
    ladder.append(button("retranscode", "Re-transcode", () => retranscode(tr)), element("span", "transcode-status"));

    const poster = element("input", "poster-file");
    poster.type = "file";
    poster.accept = "image/jpeg,image/png,image/webp";
    poster.addEventListener("change", () => replacePoster(tr, poster));

    const captions = element("div", "captions-box");
    const language = element("input", "caption-language");
    language.placeholder = "language, e.g. en";
    language.maxLength = 35;
    language.setAttribute("aria-label", "Captions language");
    const label = element("input", "caption-label");
    label.placeholder = "label, e.g. English";
    label.maxLength = 100;
    label.setAttribute("aria-label", "Captions label");
    const file = element("input", "caption-file");
    file.type = "file";
    file.accept = ".vtt,.srt,text/vtt,application/x-subrip";
    file.setAttribute("aria-label", "Captions file (.vtt or .srt)");
    captions.append(
      element("h4", "", "Captions"),
      element("ul", "captions"),
      language,
      label,
      file,
      button("caption-upload", "Upload captions", () => uploadCaptions(tr)),
    );

    const status = element("p", "manage-status");
    status.setAttribute("role", "status");
    td.append(form, ladder, labelled("Replace poster", poster), captions, status);
    manage.append(td);
    return manage;
  }

  function report(tr, message, isError) {
    const status = tr.manage.querySelector(".manage-status");
    status.textContent = message;
    status.classList.toggle("error", Boolean(isError));
    say(message, isError);
  }

  function update(tr, item) {
    tr.item = item;
    tr.querySelector(".title").textContent = item.title || item.filename || item.id;
    const progress = item.progress && item.progress.percent;
    const state = tr.querySelector(".state");
    let text = item.state + (progress && !SETTLED.includes(item.state) ? " " + Math.round(progress) + "%" : "");
    if (item.state === "ready" && item.error) text += " (last re-transcode failed)";
    state.textContent = text;
    state.dataset.state = item.state;
    state.title = item.error || "";
    const privacy = tr.querySelector(".privacy");
    if (!privacy.disabled && document.activeElement !== privacy) {
      privacy.value = item.privacy;
      privacy.dataset.saved = item.privacy;
    }
  }

  function fillForm(tr) {
    const item = tr.item;
    tr.manage.querySelector(".edit-title").value = item.title || "";
    tr.manage.querySelector(".edit-description").value = item.description || "";
    tr.manage.querySelector(".edit-tags").value = (item.tags || []).join(", ");
    tr.manage.querySelector(".transcode-status").textContent = item.error ? item.error : "";
  }

  function toggleManage(tr) {
    const opening = tr.manage.hidden;
    tr.manage.hidden = !opening;
    tr.querySelector(".edit").textContent = opening ? "Close" : "Edit";
    if (!opening) return;
    fillForm(tr);
    loadCaptions(tr);
    followTranscode(tr);
  }

  async function saveDetails(tr) {
    const save = tr.manage.querySelector(".save");
    const tags = tr.manage.querySelector(".edit-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
    const edit = {
      title: tr.manage.querySelector(".edit-title").value.trim(),
      description: tr.manage.querySelector(".edit-description").value,
      tags,
    };
    save.disabled = true;
    try {
      const video = await call("PATCH", videoPath(tr), edit);
      update(tr, { ...tr.item, ...video });
      fillForm(tr);
      report(tr, "saved “" + titleOf(tr) + "”");
    } catch (error) {
      report(tr, "could not save: " + error.message, true);
    } finally {
      save.disabled = false;
    }
  }

  async function changePrivacy(tr, select) {
    const wanted = select.value;
    select.disabled = true;
    try {
      const video = await call("PATCH", videoPath(tr), { privacy: wanted });
      select.dataset.saved = video.privacy;
      select.value = video.privacy;
      say("“" + titleOf(tr) + "” is now " + video.privacy);
    } catch (error) {
      select.value = select.dataset.saved || "public";
      say("could not change the privacy: " + error.message, true);
    } finally {
      select.disabled = false;
    }
  }

  async function retranscode(tr) {
    const start = tr.manage.querySelector(".retranscode");
    start.disabled = true;
    try {
      const queued = await call("POST", videoPath(tr, "/transcode"));
      report(tr, "transcode of “" + titleOf(tr) + "” queued" + (queued.state === "ready" ? ": it plays as it is until the new one is ready" : ""));
      load();
      followTranscode(tr);
    } catch (error) {
      report(tr, "could not transcode again: " + error.message, true);
      start.disabled = false;
    }
  }

  // Polls the video's latest transcode while it runs, then says how it ended.
  async function followTranscode(tr) {
    clearTimeout(tr.following);
    const start = tr.manage.querySelector(".retranscode");
    const status = tr.manage.querySelector(".transcode-status");
    let job;
    try {
      job = await call("GET", videoPath(tr, "/transcode"));
    } catch (error) {
      status.textContent = "transcode state unavailable: " + error.message;
      return;
    }
    start.disabled = job.running;
    const wasRunning = tr.transcoding;
    tr.transcoding = job.running;
    if (job.running) {
      const progress = job.state === "ready" ? "re-transcoding; the current ladder plays meanwhile" : "transcoding";
      status.textContent = progress + (job.job && job.job.error ? " (retrying: " + job.job.error + ")" : "");
      tr.following = setTimeout(() => followTranscode(tr), 2000);
      return;
    }
    const last = job.job;
    if (last && last.outcome === "failed") status.textContent = "last transcode failed: " + (last.error || job.error || "unknown reason");
    else if (last && last.outcome === "succeeded") status.textContent = "last transcode finished " + (last.finished_at || "").slice(0, 19).replace("T", " ");
    else status.textContent = job.error || "";
    if (wasRunning) report(tr, "transcode of “" + titleOf(tr) + "”: " + status.textContent, last && last.outcome === "failed");
    if (tr.item && tr.item.state !== job.state) load();
  }

  async function replacePoster(tr, input) {
    const file = input.files && input.files[0];
    if (!file) return;
    input.disabled = true;
    try {
      await call("PUT", videoPath(tr, "/poster"), file, file.type);
      report(tr, "new poster for “" + titleOf(tr) + "”");
    } catch (error) {
      report(tr, "could not replace the poster: " + error.message, true);
    } finally {
      input.value = "";
      input.disabled = false;
    }
  }

  async function loadCaptions(tr) {
    const list = tr.manage.querySelector(".captions");
    let answer;
    try {
      answer = await call("GET", videoPath(tr, "/captions"));
    } catch (error) {
      list.replaceChildren(element("li", "error", "captions unavailable: " + error.message));
      return;
    }
    const items = answer.items || [];
    list.replaceChildren(
      ...(items.length ? items : [null]).map((caption) => {
        if (!caption) return element("li", "none", "no captions yet");
        const li = element("li", "caption");
        li.dataset.language = caption.language;
        const name = caption.language + (caption.label ? " (" + caption.label + ")" : "") + ", " + caption.cues + " cues";
        li.append(element("span", "caption-name", name), button("caption-delete", "Delete", () => deleteCaptions(tr, caption.language)));
        return li;
      }),
    );
  }

  async function uploadCaptions(tr) {
    const language = tr.manage.querySelector(".caption-language").value.trim();
    const label = tr.manage.querySelector(".caption-label").value.trim();
    const input = tr.manage.querySelector(".caption-file");
    const file = input.files && input.files[0];
    if (!language || !file) {
      report(tr, "choose the captions' language and a .vtt or .srt file", true);
      return;
    }
    const extension = file.name.split(".").pop().toLowerCase();
    const query = label ? "?label=" + encodeURIComponent(label) : "";
    try {
      await call("PUT", videoPath(tr, "/captions/" + encodeURIComponent(language) + query), file, CAPTION_TYPES[extension] || file.type);
      input.value = "";
      report(tr, "captions " + language + " saved");
    } catch (error) {
      report(tr, "could not save the captions: " + error.message, true);
    }
    loadCaptions(tr);
  }

  async function deleteCaptions(tr, language) {
    try {
      await call("DELETE", videoPath(tr, "/captions/" + encodeURIComponent(language)));
      report(tr, "captions " + language + " deleted");
    } catch (error) {
      report(tr, "could not delete the captions: " + error.message, true);
    }
    loadCaptions(tr);
  }

  async function deleteVideo(tr) {
    const name = titleOf(tr);
    if (!window.confirm("Delete “" + name + "”? This cannot be undone.")) return;
    try {
      await call("DELETE", videoPath(tr));
      rows.delete(tr.dataset.id);
      clearTimeout(tr.following);
      tr.manage.remove();
      tr.remove();
      say("deleted “" + name + "”");
    } catch (error) {
      say("could not delete “" + name + "”: " + error.message, true);
    }
  }

  async function load() {
    clearTimeout(timer);
    if (!VspSignIn.token()) {
      rows.forEach((tr) => clearTimeout(tr.following));
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
    for (const [id, tr] of [...rows.entries()]) {
      if (!seen.has(id)) {
        clearTimeout(tr.following);
        rows.delete(id);
      }
    }
    body.replaceChildren(...ordered.flatMap((tr) => [tr, tr.manage]));
    table.hidden = ordered.length === 0;
    // A message about one video stays until the next change; otherwise the count.
    if (!statusLine.textContent || /^(\d+ videos?|No videos yet: upload one\.|Sign in to see your videos\.|your videos are unavailable: .*)$/.test(statusLine.textContent)) {
      say(page.total ? page.total + " video" + (page.total === 1 ? "" : "s") : "No videos yet: upload one.");
    }
    // Videos still on their way are followed until they settle.
    if (page.items.some((item) => !SETTLED.includes(item.state))) timer = setTimeout(load, 3000);
  }

  window.vspMy = { load };
  VspSignIn.onChange(load);
  VspSignIn.mount(document.getElementById("account"), root);
  load();
})();
