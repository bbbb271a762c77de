/* ragtune: the pages' API client — the key lives in sessionStorage (from the #key= / #token= fragment, or
   typed in when the server asks for one), server-sent events are read from fetch streams. */
(function () {
  "use strict";
  var R = window.Ragtune = window.Ragtune || {};
  var STORE = "ragtune-key";

  (function takeFragment() {
    var m = /(?:^|[#&])(?:key|token)=([^&]+)/.exec(window.location.hash);
    if (m) {
      try { sessionStorage.setItem(STORE, decodeURIComponent(m[1])); } catch (e) { R._key = decodeURIComponent(m[1]); }
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
  })();

  R.getKey = function () {
    try { return sessionStorage.getItem(STORE) || R._key || ""; } catch (e) { return R._key || ""; }
  };
  R.setKey = function (key) {
    R._key = key;
    try { if (key) sessionStorage.setItem(STORE, key); else sessionStorage.removeItem(STORE); } catch (e) { /* private mode */ }
  };

  function ApiError(status, message) { this.status = status; this.message = message; }
  R.ApiError = ApiError;

  R.request = function (method, path, body) {
    var headers = {};
    var key = R.getKey();
    if (key) headers["Authorization"] = "Bearer " + key;
    var init = { method: method, headers: headers, credentials: "omit", cache: "no-store" };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    return fetch(path, init);
  };

  R.api = function (method, path, body) {
    return R.request(method, path, body).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!resp.ok) {
          var msg = data && data.error ? (typeof data.error === "string" ? data.error : data.error.message) : resp.statusText;
          if (resp.status === 401 && R.onUnauthorized) R.onUnauthorized(msg);
          throw new ApiError(resp.status, msg);
        }
        return data;
      });
    });
  };

  // POST, then call onEvent(name, data) for each server-sent event; resolves when the stream ends.
  R.stream = function (path, body, onEvent) {
    return R.request("POST", path, body).then(function (resp) {
      if (!resp.ok) {
        return resp.text().then(function (text) {
          var msg = resp.statusText;
          try { var d = JSON.parse(text); msg = typeof d.error === "string" ? d.error : d.error.message; } catch (e) { /* keep */ }
          if (resp.status === 401 && R.onUnauthorized) R.onUnauthorized(msg);
          throw new ApiError(resp.status, msg);
        });
      }
      var reader = resp.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function dispatch(block) {
        var event = "message", data = [];
        block.split("\n").forEach(function (line) {
          if (line.indexOf("event:") === 0) event = line.slice(6).trim();
          else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
        });
        if (!data.length) return;
        var parsed;
        try { parsed = JSON.parse(data.join("\n")); } catch (e) { parsed = data.join("\n"); }
        onEvent(event, parsed);
      }
      function pump() {
        return reader.read().then(function (r) {
          if (r.done) { if (buffer.trim()) dispatch(buffer); return; }
          buffer += decoder.decode(r.value, { stream: true });
          var at;
          while ((at = buffer.indexOf("\n\n")) >= 0) {
            dispatch(buffer.slice(0, at));
            buffer = buffer.slice(at + 2);
          }
          return pump();
        });
      }
      return pump();
    });
  };

  R.query = function (name) {
    return new URLSearchParams(window.location.search).get(name);
  };
})();
