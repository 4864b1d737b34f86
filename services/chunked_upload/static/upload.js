// Resumable upload with tus-js-client, then live state from the server-sent events stream.
// Uploads belong to an account: the page signs in first (VspSignIn, /static/signin.js) and sends
// its token with every request, the progress events included.
(function () {
  "use strict";
  var form = document.getElementById("form");
  var bar = document.getElementById("bar");
  var percent = document.getElementById("percent");
  var statusText = document.getElementById("status");
  var stateText = document.getElementById("state");
  var videoIdText = document.getElementById("video-id");
  var pauseButton = document.getElementById("pause");
  var current = null;
  var events = null;
  // ?endpoint= sends the upload to a path of this server or to a tus server the page lists (it
  // must allow this page's origin by CORS); progress events then come from that server too.
  var notice = document.getElementById("notice");
  var chosen = UploadEndpoint.choose(
    new URLSearchParams(window.location.search).get("endpoint"),
    window.location.href,
    UploadEndpoint.allowedIn(document)
  );
  var endpoint = chosen.endpoint;
  if (chosen.refused) {
    notice.textContent = "The endpoint named in this page's address is not allowed; " +
      "files go to this server (" + endpoint + ") instead.";
    notice.hidden = false;
  }
  var apiBase = new URL(endpoint, window.location.href).origin;

  function showState(data) {
    var stage = data.stage || data.state;
    if (!stage) { return; }
    stateText.textContent = stage === "transcoding" && data.percent !== undefined
      ? "transcoding " + Math.round(data.percent) + "%"
      : stage;
  }

  // One server-sent event from its block of lines: {event, data} (data parsed as JSON).
  function parseEvent(block) {
    var name = "message";
    var data = [];
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) { name = line.slice(6).trim(); }
      if (line.indexOf("data:") === 0) { data.push(line.slice(5).replace(/^ /, "")); }
    });
    return data.length ? { event: name, data: JSON.parse(data.join("\n")) } : null;
  }

  // EventSource cannot send an Authorization header (a private video's events are its owner's),
  // so the stream is read with fetch: blocks end at a blank line. True once "end" arrived.
  function readEvents(body) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) { return false; }
        buffer = (buffer + decoder.decode(chunk.value, { stream: true })).replace(/\r\n/g, "\n");
        var at;
        while ((at = buffer.indexOf("\n\n")) >= 0) {
          var event = parseEvent(buffer.slice(0, at));
          buffer = buffer.slice(at + 2);
          if (!event) { continue; }
          showState(event.data);
          if (event.event === "end") { reader.cancel(); return true; }
        }
        return pump();
      });
    }
    return pump();
  }

  function follow(videoId, attempt) {
    if (events) { events.abort(); }
    var controller = new AbortController();
    events = controller;
    videoIdText.textContent = videoId;
    var url = apiBase + "/api/videos/" + encodeURIComponent(videoId) + "/events";
    VspSignIn.fetch(url, { headers: { Accept: "text/event-stream" }, signal: controller.signal })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return readEvents(response.body);
      })
      .then(function (ended) {
        // The stream closed early (a restart, a proxy's timeout): pick it up again.
        if (!ended && events === controller) { setTimeout(function () { follow(videoId, 0); }, 1000); }
      })
      .catch(function (error) {
        if (controller.signal.aborted || events !== controller) { return; }
        if (attempt < 5) {
          setTimeout(function () { follow(videoId, attempt + 1); }, 1000 * (attempt + 1));
        } else {
          stateText.textContent = "progress unavailable: " + error.message;
        }
      });
  }

  // The upload's URL is its owner's alone; the video it becomes has an id of its own.
  function followVideoOf(response) {
    var videoId = response.getHeader("Video-Id");
    if (videoId && videoId !== videoIdText.textContent) { follow(videoId, 0); }
  }

  VspSignIn.onChange(function (account) {
    form.hidden = !account;
    if (!account && current) {
      current.abort();
      pauseButton.disabled = true;
      statusText.textContent = "stopped: signed out";
    }
  });
  VspSignIn.mount(document.getElementById("account"), "");
  form.hidden = !VspSignIn.token();

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var file = document.getElementById("file").files[0];
    if (!file) { return; }
    var metadata = { filename: file.name, filetype: file.type || "application/octet-stream" };
    metadata.privacy = document.getElementById("privacy").value;
    var title = document.getElementById("title").value;
    var tags = document.getElementById("tags").value;
    if (title) { metadata.title = title; }
    if (tags) { metadata.tags = tags; }
    statusText.textContent = "starting";
    var token = VspSignIn.token();
    current = new tus.Upload(file, {
      endpoint: endpoint,
      chunkSize: 8 * 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      removeFingerprintOnSuccess: true,
      metadata: metadata,
      headers: VspSignIn.headers(),
      onAfterResponse: function (request, response) {
        VspSignIn.check({ status: response.getStatus() }, token);
        followVideoOf(response);
      },
      onProgress: function (sent, total) {
        var value = total ? (sent / total) * 100 : 0;
        bar.value = value;
        percent.textContent = value.toFixed(1) + "%";
        statusText.textContent = "uploading";
      },
      onError: function (error) {
        statusText.textContent = "failed: " + error.message;
        pauseButton.disabled = true;
      },
      onSuccess: function () {
        bar.value = 100;
        percent.textContent = "100%";
        statusText.textContent = "done";
        pauseButton.disabled = true;
      },
    });
    current.findPreviousUploads().then(function (previous) {
      if (previous.length) { current.resumeFromPreviousUpload(previous[0]); }
      current.start();
      pauseButton.disabled = false;
    });
  });

  pauseButton.addEventListener("click", function () {
    if (!current) { return; }
    if (pauseButton.textContent === "Pause") {
      current.abort();
      pauseButton.textContent = "Resume";
      statusText.textContent = "paused";
    } else {
      current.start();
      pauseButton.textContent = "Pause";
    }
  });
})();
