/* ragtune admin page: sources (add, upload, re-sync, remove, last sync), sync jobs with progress, bot
   settings, keys and widget tokens, conversations with their feedback. DOM built with textContent only. */
(function () {
  "use strict";
  var R = window.Ragtune, el = R.el;
  var bot = R.query("bot") || "";
  var select = document.getElementById("bot-select");
  var pollTimer = null;

  function enc(s) { return encodeURIComponent(s); }
  function base() { return "/api/bots/" + enc(bot); }
  function when(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "never"; }
  function flash(text, error) {
    var f = document.getElementById("flash");
    f.textContent = text;
    f.className = "notice" + (error ? " error" : "");
    f.hidden = !text;
  }
  function fail(err) { flash(err.message || String(err), true); }
  function button(text, onClick, cls) {
    var b = el("button", cls || null, text);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  R.onUnauthorized = function (msg) {
    document.getElementById("keybox").hidden = false;
    document.getElementById("key-msg").textContent = msg || "This server needs the admin key or a bot key.";
  };
  document.getElementById("key-form").addEventListener("submit", function (e) {
    e.preventDefault();
    R.setKey(document.getElementById("key-input").value.trim());
    document.getElementById("keybox").hidden = true;
    loadBots();
  });

  function loadBots() {
    return R.api("GET", "/api/bots").then(function (bots) {
      select.replaceChildren();
      bots.forEach(function (b) {
        var o = el("option", null, b.name + " (" + b.documents + " docs" +
                   (b.adapter_stale ? ", adapter stale: re-run finetune" : "") + ")");
        o.value = b.name;
        select.appendChild(o);
      });
      if (!bots.some(function (b) { return b.name === bot; })) bot = bots.length ? bots[0].name : "";
      select.value = bot;
      refresh();
    }).catch(fail);
  }
  select.addEventListener("change", function () { bot = select.value; refresh(); });
  document.getElementById("new-bot").addEventListener("submit", function (e) {
    e.preventDefault();
    var name = document.getElementById("new-bot-name").value.trim();
    if (!name) return;
    R.api("POST", "/api/bots", { name: name }).then(function () { bot = name; loadBots(); }).catch(fail);
  });

  function refresh() {
    if (!bot) return;
    document.getElementById("chat-link").href = "/chat?bot=" + enc(bot);
    history.replaceState(null, "", "/admin?bot=" + enc(bot));
    loadSources(); loadJobs(); loadSettings(); loadKeys(); loadConversations();
  }

  // ------------------------------------------------------------------ sources and jobs
  function loadSources() {
    R.api("GET", base() + "/sources").then(function (sources) {
      var body = document.querySelector("#sources tbody");
      body.replaceChildren();
      sources.forEach(function (s) {
        var tr = el("tr");
        tr.appendChild(el("td", "uri", s.uploads ? "uploaded files" : s.uri));
        tr.appendChild(el("td", null, s.kind));
        tr.appendChild(el("td", null, when(s.synced_at)));
        var actions = el("td");
        actions.appendChild(button("re-sync", function () {
          R.api("POST", base() + "/sources/" + s.id + "/sync").then(loadJobs).catch(fail);
        }));
        actions.appendChild(button("remove", function () {
          if (!window.confirm("Remove " + s.uri + " and its documents?")) return;
          R.api("DELETE", base() + "/sources/" + s.id).then(loadSources).catch(fail);
        }, "danger"));
        tr.appendChild(actions);
        body.appendChild(tr);
      });
    }).catch(fail);
  }
  document.getElementById("add-source").addEventListener("submit", function (e) {
    e.preventDefault();
    var uri = document.getElementById("source-uri").value.trim();
    if (!uri) return;
    R.api("POST", base() + "/sources", { uri: uri }).then(function () {
      document.getElementById("source-uri").value = "";
      loadSources(); loadJobs();
    }).catch(fail);
  });
  document.getElementById("upload").addEventListener("submit", function (e) {
    e.preventDefault();
    var files = document.getElementById("upload-files").files;
    if (!files.length) return;
    var data = new FormData();
    for (var i = 0; i < files.length; i++) data.append("files", files[i], files[i].name);
    R.api("POST", base() + "/uploads", data).then(function (r) {
      flash("uploaded " + r.files.join(", "));
      loadSources(); loadJobs();
    }).catch(fail);
  });
  document.getElementById("sync-all").addEventListener("click", function () {
    R.api("POST", base() + "/sync").then(loadJobs).catch(fail);
  });

  function loadJobs() {
    R.api("GET", base() + "/jobs").then(function (jobs) {
      var list = document.getElementById("jobs");
      list.replaceChildren();
      var running = false;
      jobs.slice(0, 10).forEach(function (j) {
        var text = j.state + " · " + j.processed + " documents processed";
        if (j.current) text += " · now: " + j.current;
        if (j.report) text += " · added " + j.report.added + ", updated " + j.report.updated + ", removed " +
          j.report.removed + ", unchanged " + j.report.unchanged + ", failed " + j.report.failed.length;
        if (j.error) text += " · " + j.error;
        if (j.state === "queued") text += " · waiting for a sync worker" + (j.host ? " on " + j.host : "");
        else if (j.worker) text += " · worker " + j.worker + (j.attempts > 1 ? " (attempt " + j.attempts + ")" : "");
        var li = el("li", "job " + j.state, when(j.created_at) + " — " + text);
        li.setAttribute("data-state", j.state);
        list.appendChild(li);
        if (j.state === "queued" || j.state === "running") running = true;
      });
      clearTimeout(pollTimer);
      if (running) pollTimer = setTimeout(loadJobs, 1000);
      else loadSources();
    }).catch(fail);
  }

  // ------------------------------------------------------------------ settings
  function loadSettings() {
    R.api("GET", base() + "/settings").then(function (s) {
      document.getElementById("set-model").value = s.model;
      document.getElementById("set-strategy").value = s.strategy;
      document.getElementById("set-system").value = s.system_prompt;
      document.getElementById("set-handoff").value = s.handoff;
      document.getElementById("set-min-support").value = s.min_support === null ? "" : s.min_support;
    }).catch(fail);
  }
  document.getElementById("settings").addEventListener("submit", function (e) {
    e.preventDefault();
    var bar = document.getElementById("set-min-support").value.trim();
    R.api("PATCH", base() + "/settings", {
      model: document.getElementById("set-model").value.trim(),
      strategy: document.getElementById("set-strategy").value,
      system_prompt: document.getElementById("set-system").value,
      handoff: document.getElementById("set-handoff").value,
      min_support: bar === "" ? null : Number(bar)  // empty: left as it is
    }).then(function () { flash("settings saved"); }).catch(fail);
  });

  // ------------------------------------------------------------------ keys
  function loadKeys() {
    R.api("GET", base() + "/keys").then(function (keys) {
      var list = document.getElementById("keys");
      list.replaceChildren();
      keys.forEach(function (k) {
        var li = el("li", k.revoked_at ? "revoked" : null,
                    (k.kind === "widget" ? "widget token " : "API key ") + k.hint + (k.label ? " (" + k.label + ")" : "") +
                    " · created " + when(k.created_at) + (k.revoked_at ? " · revoked" : ""));
        if (!k.revoked_at) li.appendChild(button("revoke", function () {
          R.api("DELETE", base() + "/keys/" + k.id).then(loadKeys).catch(fail);
        }, "danger"));
        list.appendChild(li);
      });
    }).catch(function (err) {
      document.getElementById("keys").replaceChildren(el("li", null, err.status === 403 ? "keys: admin key only" : err.message));
    });
  }
  function newKey(kind) {
    R.api("POST", base() + "/keys", { kind: kind }).then(function (k) {
      var out = document.getElementById("secret");
      var text = "Copy it now — only its hash is kept.\n\n" + k.key;
      if (kind === "widget") {
        text += "\n\nPaste into any page:\n<script src=\"" + window.location.origin + "/widget.js\" data-bot=\"" + bot +
          "\" data-token=\"" + k.key + "\"></script>";
      }
      out.textContent = text;
      out.hidden = false;
      loadKeys();
    }).catch(fail);
  }
  document.getElementById("new-key").addEventListener("click", function () { newKey("key"); });
  document.getElementById("new-widget").addEventListener("click", function () { newKey("widget"); });

  // ------------------------------------------------------------------ conversations
  function loadConversations() {
    R.api("GET", base() + "/conversations?limit=100").then(function (rows) {
      var body = document.querySelector("#conversations tbody");
      body.replaceChildren();
      rows.forEach(function (c) {
        var tr = el("tr", "clickable");
        tr.appendChild(el("td", null, c.first_question || "(empty)"));
        tr.appendChild(el("td", null, String(c.messages)));
        tr.appendChild(el("td", null, "\u25B2 " + c.thumbs_up + "  \u25BC " + c.thumbs_down));
        tr.appendChild(el("td", null, c.channel));
        tr.appendChild(el("td", null, when(c.updated_at)));
        tr.addEventListener("click", function () { showConversation(c.id); });
        body.appendChild(tr);
      });
    }).catch(fail);
  }
  function showConversation(id) {
    R.api("GET", base() + "/conversations/" + enc(id)).then(function (c) {
      var box = document.getElementById("conversation");
      box.replaceChildren(el("h3", null, "Conversation " + c.id));
      c.messages.forEach(function (m) {
        var node = el("div", "msg " + (m.role === "user" ? "user" : "bot"));
        var body = el("div", "body");
        if (m.role === "user") body.textContent = m.content;
        else body.appendChild(R.renderMarkdown(m.content));
        node.appendChild(body);
        if (m.citations && m.citations.length) {
          var list = el("ol", "cites");
          m.citations.forEach(function (ci) { list.appendChild(el("li", null, (ci.title || "") + " — " + ci.source)); });
          node.appendChild(list);
        }
        if (m.feedback) {
          node.appendChild(el("p", "feedback-shown", (m.feedback.rating > 0 ? "\u25B2 helpful" : "\u25BC not helpful") +
                              (m.feedback.comment ? " " + m.feedback.comment : "")));
        }
        box.appendChild(node);
      });
    }).catch(fail);
  }

  loadBots();
})();
