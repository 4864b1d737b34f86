// Resumable upload with tus-js-client, then live state from the server-sent events stream.
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

  function follow(videoId) {
    if (events) { events.close(); }
    videoIdText.textContent = videoId;
    events = new EventSource(apiBase + "/api/videos/" + videoId + "/events");
    events.addEventListener("progress", function (e) {
      var data = JSON.parse(e.data);
      var stage = data.stage || data.state;
      if (stage) { stateText.textContent = stage; }
      if (stage === "transcoding" && data.percent !== undefined) {
        stateText.textContent = "transcoding " + Math.round(data.percent) + "%";
      }
    });
    events.addEventListener("end", function (e) {
      var data = JSON.parse(e.data);
      stateText.textContent = data.stage || data.state;
      events.close();
    });
  }

  // The upload's URL is its owner's alone; the video it becomes has an id of its own.
  function followVideoOf(response) {
    var videoId = response.getHeader("Video-Id");
    if (videoId && videoId !== videoIdText.textContent) { follow(videoId); }
  }

  // Uploads belong to an account: the page sends its API key or access token with every
  // request, and keeps it for this browser tab only.
  var credential = document.getElementById("credential");
  credential.value = window.sessionStorage.getItem("vsp-credential") || "";

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var file = document.getElementById("file").files[0];
    if (!file) { return; }
    var metadata = { filename: file.name, filetype: file.type || "application/octet-stream" };
    window.sessionStorage.setItem("vsp-credential", credential.value);
    metadata.privacy = document.getElementById("privacy").value;
    var title = document.getElementById("title").value;
    var tags = document.getElementById("tags").value;
    if (title) { metadata.title = title; }
    if (tags) { metadata.tags = tags; }
    statusText.textContent = "starting";
    current = new tus.Upload(file, {
      endpoint: endpoint,
      chunkSize: 8 * 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      removeFingerprintOnSuccess: true,
      metadata: metadata,
      headers: { Authorization: "Bearer " + credential.value },
      onAfterResponse: function (request, response) { followVideoOf(response); },
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
