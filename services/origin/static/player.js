// The vsp player: catalog, signed HLS playback through hls.js, a quality selector.
//
// Every URL is relative to where the page was loaded from, so the same page works when served
// by the origin, an edge or the balancer. `?api=<base>` and `?media=<base>` point the API calls
// and the media requests elsewhere; `?media=as-is` uses the stream API's URLs unchanged
// (e.g. a configured CDN); `?mode=token` asks for path-token URLs.
//
// Signed in (VspSignIn, static/signin.js), every API call carries the account's token, so an
// owner plays their private videos; to anyone else such a video does not exist (404).
//
// A link chooses those query parameters, so the page talks only to its own origin and to the
// origins the server names in the `vsp-endpoints` meta tag (ORIGIN_PLAYER_ENDPOINTS, the CDN
// and public URLs); any other base is ignored, and media elsewhere is not played.
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);
  const allowedOrigins = new Set([location.origin, ...configuredOrigins()]);
  const ignored = [];
  // The folder the page lives in: "/" for /player, "/cdn/" for /cdn/player.
  const root = location.pathname.replace(/player\/?$/, "");
  const apiBase = chosenBase("api", root).replace(/\/?$/, "/");
  const mediaBase = params.get("media") === "as-is" ? "as-is" : chosenBase("media", root);
  const mode = ["query", "token"].includes(params.get("mode")) ? params.get("mode") : "";

  const video = document.getElementById("video");
  const quality = document.getElementById("quality");
  const levelLabel = document.getElementById("level");
  const statusLine = document.getElementById("status");
  const title = document.getElementById("title");
  const catalog = document.getElementById("catalog");
  const catalogStatus = document.getElementById("catalog-status");

  const state = { videoId: null, hls: null, refreshes: 0, errors: [], switches: [], query: "" };
  const HIDDEN = "this video is private or does not exist";
  window.vspPlayer = { state, video, play, loadCatalog, apiBase, mediaBase, ignored };

  function configuredOrigins() {
    const meta = document.querySelector('meta[name="vsp-endpoints"]');
    try {
      const listed = JSON.parse((meta && meta.content) || "[]");
      return Array.isArray(listed) ? listed.filter((item) => typeof item === "string") : [];
    } catch (error) {
      return [];
    }
  }

  function allowed(url) {
    try {
      return allowedOrigins.has(new URL(url, location.href).origin);
    } catch (error) {
      return false;
    }
  }

  function chosenBase(name, fallback) {
    const value = params.get(name);
    if (value === null || value === "") return fallback;
    if (allowed(value)) return value;
    ignored.push(name);
    return fallback;
  }

  function say(message, isError) {
    statusLine.textContent = message;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  async function getJson(path, options) {
    const response = await VspSignIn.fetch(apiBase + path, options);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.detail || response.statusText);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  // The stream API answers with absolute URLs for whoever asked; fetch media from our own base.
  // Null for a URL on an origin the page may not load from.
  function mediaUrl(url) {
    if (!url) return null;
    let chosen = url;
    if (mediaBase !== "as-is") {
      const parsed = new URL(url, location.href);
      const at = parsed.pathname.indexOf("/origin/");
      if (at >= 0) {
        chosen = mediaBase.replace(/\/?$/, "/") + parsed.pathname.slice(at + 1) + parsed.search;
      }
    }
    return allowed(chosen) ? chosen : null;
  }

  function kbps(bits) {
    return Math.round(bits / 1000) + " kb/s";
  }

  function levelName(level) {
    const size = level.height ? level.height + "p" : level.name || "audio";
    return size + " · " + kbps(level.bitrate);
  }

  function fillQualities(hls) {
    quality.innerHTML = "";
    const auto = new Option("Auto", "-1");
    quality.add(auto);
    hls.levels
      .map((level, index) => ({ level, index }))
      .sort((a, b) => b.level.bitrate - a.level.bitrate)
      .forEach(({ level, index }) => quality.add(new Option(levelName(level), String(index))));
    quality.value = "-1";
    quality.disabled = hls.levels.length < 2;
  }

  async function streamFor(id, refresh) {
    if (refresh) {
      return getJson("api/stream/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(mode ? { video_id: id, mode } : { video_id: id }),
      });
    }
    return getJson("api/stream/" + encodeURIComponent(id) + (mode ? "?mode=" + mode : ""));
  }

  function attach(source, startAt) {
    if (state.hls) state.hls.destroy();
    if (!window.Hls || !Hls.isSupported()) {
      // Safari and iOS play HLS natively.
      video.src = source;
      video.currentTime = startAt || 0;
      video.play().catch(() => {});
      return;
    }
    const hls = new Hls({ startPosition: startAt || -1, capLevelToPlayerSize: false });
    state.hls = hls;
    window.vspPlayer.hls = hls;
    subtitleMenu.attach(hls);
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      fillQualities(hls);
      video.play().catch((error) => say("press play to start (" + error.name + ")"));
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_event, data) => {
      const level = hls.levels[data.level];
      state.switches.push(data.level);
      levelLabel.textContent = level ? "playing " + levelName(level) : "";
    });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      const code = data.response && data.response.code;
      state.errors.push({ type: data.type, details: data.details, fatal: data.fatal, code });
      if (!data.fatal) return;
      if (code === 403 && state.refreshes < 3) {
        // Signatures outlive playback, but a very long pause can outlast them: re-sign, resume.
        state.refreshes += 1;
        say("refreshing the signed URLs");
        start(state.videoId, video.currentTime, true);
        return;
      }
      say("playback failed: " + data.details + (code ? " (HTTP " + code + ")" : ""), true);
    });
    hls.loadSource(source);
    hls.attachMedia(video);
  }

  function stop() {
    if (state.hls) state.hls.destroy();
    state.hls = null;
    window.vspPlayer.hls = null;
    video.removeAttribute("src");
    video.load();
  }

  async function start(id, startAt, refresh) {
    try {
      const stream = await streamFor(id, refresh);
      state.stream = stream;
      seekPreview.load(id, mediaUrl(stream.thumbnails_url));
      const source = mediaUrl(stream.master_url);
      if (!source) {
        say("cannot play: the media is on a server this page may not load from", true);
        return;
      }
      attach(source, startAt);
      say("");
    } catch (error) {
      if (error.status === 409) {
        const progress = await getJson("api/videos/" + encodeURIComponent(id)).catch(() => null);
        const percent = progress && progress.progress && progress.progress.percent;
        say("not ready yet: " + (error.body.state || "processing") +
          (percent ? " " + Math.round(percent) + "%" : ""));
        setTimeout(() => { if (state.videoId === id) start(id, startAt, refresh); }, 2000);
        return;
      }
      if (error.status === 404) {
        stop();
        say("cannot play: " + HIDDEN, true);
        return;
      }
      say("cannot play: " + error.message, true);
    }
  }

  async function play(id) {
    state.videoId = id;
    state.refreshes = 0;
    const url = new URL(location.href);
    url.searchParams.set("video", id);
    history.replaceState(null, "", url);
    for (const item of catalog.querySelectorAll("button")) {
      item.setAttribute("aria-current", String(item.dataset.id === id));
    }
    title.textContent = "";
    video.removeAttribute("poster");
    // The stream API says whether this viewer may play the video; the details only decorate.
    getJson("api/videos/" + encodeURIComponent(id)).then((details) => {
      if (state.videoId !== id) return;
      title.textContent = details.title || details.filename || id;
      const poster = mediaUrl(details.poster_url);
      if (poster) video.poster = poster;
    }, () => {});
    await start(id, 0, false);
  }

  function duration(seconds) {
    if (!seconds) return "";
    const s = Math.round(seconds);
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function entry(item) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.id = item.id;
    button.setAttribute("aria-current", String(item.id === state.videoId));
    const img = document.createElement("img");
    img.alt = "";
    const poster = mediaUrl(item.poster_url);
    if (poster) img.src = poster;
    const text = document.createElement("span");
    const name = document.createElement("strong");
    name.textContent = item.title || item.filename || item.id;
    const meta = document.createElement("div");
    meta.className = "meta";
    const ladder = item.renditions.map((r) => r.name).join(" / ");
    meta.textContent = [duration(item.duration_seconds), item.state, ladder].filter(Boolean).join(" · ");
    text.append(name, meta);
    button.append(img, text);
    button.addEventListener("click", () => play(item.id));
    li.append(button);
    return li;
  }

  async function loadCatalog(query) {
    state.query = query;
    catalogStatus.textContent = "loading…";
    try {
      const page = await getJson("api/videos?limit=50" + (query ? "&q=" + encodeURIComponent(query) : ""));
      catalog.replaceChildren(...page.items.map(entry));
      catalogStatus.textContent = page.total + " video" + (page.total === 1 ? "" : "s");
    } catch (error) {
      catalogStatus.textContent = "catalog unavailable: " + error.message;
    }
  }

  // Seek bar with scrubbing previews: the thumbnails track (WebVTT, one cue per sprite tile,
  // `sprites-0.jpg#xywh=x,y,w,h`) is fetched once per video; hovering the bar shows the tile of
  // the time under the pointer in a box above it. The native controls' hover cannot be hooked,
  // hence a bar of our own under the video.
  function makeSeekPreview() {
    const bar = document.getElementById("seek-bar");
    const box = document.getElementById("seek-preview");
    const label = document.getElementById("seek-time");
    const preview = { videoId: null, url: null, cues: [], shown: null, loading: null };
    let dragging = false;

    function seconds(stamp) {
      return stamp.split(":").reduce((total, part) => total * 60 + Number(part), 0);
    }

    function parse(text, base) {
      const lines = text.split(/\r?\n/);
      const cues = [];
      for (let i = 0; i < lines.length - 1; i += 1) {
        if (!lines[i].includes("-->")) continue;
        const [from, to] = lines[i].split("-->").map((part) => seconds(part.trim().split(/\s+/)[0]));
        const [uri, fragment] = lines[i + 1].trim().split("#xywh=");
        const box = (fragment || "").split(",").map(Number);
        if (!uri || box.length !== 4 || box.some((n) => !Number.isFinite(n))) continue;
        const image = new URL(uri, base).href;
        if (!allowed(image)) continue;
        cues.push({ from, to, image, x: box[0], y: box[1], w: box[2], h: box[3] });
      }
      return cues;
    }

    function load(id, url) {
      if (preview.videoId === id && preview.url === url) return;
      Object.assign(preview, { videoId: id, url, cues: [], shown: null });
      box.hidden = true;
      if (!url) return;
      preview.loading = fetch(url)
        .then((response) => (response.ok ? response.text() : ""))
        .then((text) => {
          if (preview.url === url) preview.cues = parse(text, new URL(url, location.href).href);
        })
        .catch(() => {});
    }

    function length() {
      if (Number.isFinite(video.duration) && video.duration > 0) return video.duration;
      return preview.cues.length ? preview.cues[preview.cues.length - 1].to : 0;
    }

    function cueAt(time) {
      return preview.cues.find((cue) => time >= cue.from && time < cue.to) ||
        (preview.cues.length && time >= preview.cues[preview.cues.length - 1].to
          ? preview.cues[preview.cues.length - 1] : null);
    }

    function show(event) {
      const rect = bar.getBoundingClientRect();
      const fraction = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
      const time = fraction * length();
      const cue = cueAt(time);
      label.textContent = length() ? duration(time) || "0:00" : "";
      if (!cue) {
        box.hidden = true;
        preview.shown = null;
        return;
      }
      box.style.width = cue.w + "px";
      box.style.height = cue.h + "px";
      box.style.backgroundImage = 'url("' + cue.image + '")';
      box.style.backgroundPosition = -cue.x + "px " + -cue.y + "px";
      const left = Math.min(rect.width - cue.w, Math.max(0, event.clientX - rect.left - cue.w / 2));
      box.style.left = left + "px";
      box.hidden = false;
      preview.shown = { time, cue };
    }

    bar.addEventListener("pointermove", show);
    bar.addEventListener("pointerenter", show);
    bar.addEventListener("pointerleave", () => {
      box.hidden = true;
      preview.shown = null;
    });
    bar.addEventListener("pointerdown", () => { dragging = true; });
    bar.addEventListener("pointerup", () => { dragging = false; });
    bar.addEventListener("input", () => {
      if (length()) video.currentTime = (Number(bar.value) / Number(bar.max)) * length();
    });
    video.addEventListener("timeupdate", () => {
      if (!dragging && length()) bar.value = String(Math.round((video.currentTime / length()) * Number(bar.max)));
    });
    return { state: preview, load };
  }

  const seekPreview = makeSeekPreview();
  window.vspPlayer.seekPreview = seekPreview.state;

  // Subtitles: hls.js lists the master's subtitle renditions (EXT-X-MEDIA TYPE=SUBTITLES) as
  // `subtitleTracks`; choosing one sets `hls.subtitleTrack` and turns `subtitleDisplay` on, and
  // the video element shows the cues of the text track hls.js fills. "Off" hides them.
  function makeSubtitleMenu() {
    const menu = document.getElementById("subtitles");
    let current = null;

    function fill(hls) {
      if (hls !== current) return;
      menu.replaceChildren(new Option("Off", "-1"));
      hls.subtitleTracks.forEach((track, index) => {
        const name = track.name || track.lang || "track " + (index + 1);
        menu.add(new Option(name, String(index)));
      });
      menu.value = String(hls.subtitleDisplay ? hls.subtitleTrack : -1);
      menu.disabled = hls.subtitleTracks.length === 0;
    }

    function attach(hls) {
      current = hls;
      hls.subtitleDisplay = false;
      fill(hls);
      hls.on(Hls.Events.MANIFEST_PARSED, () => fill(hls));
      hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, () => fill(hls));
    }

    menu.addEventListener("change", () => {
      if (!current) return;
      const index = Number(menu.value);
      current.subtitleTrack = index;
      current.subtitleDisplay = index >= 0;
    });
    return { attach };
  }

  const subtitleMenu = makeSubtitleMenu();

  quality.addEventListener("change", () => {
    if (state.hls) state.hls.currentLevel = Number(quality.value);
  });
  document.getElementById("search").addEventListener("submit", (event) => {
    event.preventDefault();
    loadCatalog(document.getElementById("q").value.trim());
  });

  // Who is watching changes what the catalog lists and which videos play.
  VspSignIn.onChange(() => {
    loadCatalog(state.query);
    if (state.videoId) play(state.videoId);
  });
  VspSignIn.mount(document.getElementById("account"), apiBase);

  if (ignored.length) say("ignoring ?" + ignored.join(", ?") + ": not a server this page may use", true);
  loadCatalog("");
  const initial = params.get("video");
  if (initial) play(initial);
})();
