// Where the upload page sends files. The page's address may name an endpoint (?endpoint=); it is
// used only when it is a path on this page's own origin or one of the endpoints the server lists
// in the page, so a link cannot make the page hand someone's file to another site.
var UploadEndpoint = (function () {
  "use strict";
  var DEFAULT = "/files/";

  function sameOriginPath(requested, page) {
    // Rooted at "/", not "//" or "/\" (another host), and no control characters or backslashes
    // the URL parser would quietly drop or turn into slashes.
    if (!/^\/(?![\/\\])/.test(requested) || /[\u0000-\u001f\u007f\\]/.test(requested)) {
      return null;
    }
    var url = new URL(requested, page);
    return url.origin === page.origin ? url.pathname + url.search : null;
  }

  function listed(requested, allowed) {
    var url;
    try { url = new URL(requested); } catch (e) { return null; }
    if (url.protocol !== "http:" && url.protocol !== "https:") { return null; }
    for (var i = 0; i < allowed.length; i++) {
      var candidate;
      try { candidate = new URL(allowed[i]); } catch (e) { continue; }
      if (candidate.href === url.href) { return url.href; }
    }
    return null;
  }

  // {endpoint, refused}: the endpoint to use, and whether a requested one was set aside.
  function choose(requested, pageHref, allowed) {
    if (!requested) { return { endpoint: DEFAULT, refused: false }; }
    var page = new URL(pageHref);
    var endpoint = sameOriginPath(requested, page) || listed(requested, allowed || []);
    return endpoint ? { endpoint: endpoint, refused: false } : { endpoint: DEFAULT, refused: true };
  }

  // The endpoints the server allows, from the page's <meta name="upload-endpoints">.
  function allowedIn(doc) {
    var meta = doc.querySelector('meta[name="upload-endpoints"]');
    try {
      var list = JSON.parse(meta ? meta.getAttribute("content") : "[]");
      return Array.isArray(list) ? list.filter(function (x) { return typeof x === "string"; }) : [];
    } catch (e) {
      return [];
    }
  }

  return { DEFAULT: DEFAULT, choose: choose, allowedIn: allowedIn };
})();

if (typeof module === "object" && module.exports) { module.exports = UploadEndpoint; }
