/* ragtune: the chat (the /chat page and the widget's frame). Streams the answer as it is generated, renders it
   as sanitised Markdown, lists citations that open the cited passage, and (on the page) takes feedback. */
(function () {
  "use strict";
  var R = window.Ragtune, el = R.el;
  var mode = document.body.getAttribute("data-mode") || "page";
  var bot = R.query("bot") || "";
  var conversation = null;
  var log = document.getElementById("log");
  var form = document.getElementById("ask");
  var input = document.getElementById("question");
  var send = document.getElementById("send");
  var keybox = document.getElementById("keybox");

  function enc(s) { return encodeURIComponent(s); }

  R.onUnauthorized = function (msg) {
    if (!keybox) return;
    keybox.hidden = false;
    document.getElementById("key-msg").textContent = msg || "This server needs an API key.";
  };
  if (keybox) {
    document.getElementById("key-form").addEventListener("submit", function (e) {
      e.preventDefault();
      R.setKey(document.getElementById("key-input").value.trim());
      keybox.hidden = true;
      start();
    });
  }

  function notice(text, cls) {
    var n = el("div", "notice " + (cls || ""), text);
    log.appendChild(n);
    return n;
  }

  function start() {
    if (bot) return setBot();
    if (mode !== "page") return notice("No bot given.", "error");
    R.api("GET", "/api/bots").then(function (bots) {
      if (!bots.length) return notice("No bots yet: add documents with `ragtune ingest` or the admin page.");
      bot = bots[0].name;
      setBot();
    }).catch(function (err) { notice(err.message, "error"); });
  }

  function setBot() {
    var name = document.getElementById("bot-name");
    if (name) name.textContent = bot;
    document.title = bot + " · chat";
  }

  function addMessage(role, text) {
    var node = el("div", "msg " + role);
    var body = el("div", "body");
    if (role === "user") body.textContent = text;
    node.appendChild(body);
    log.appendChild(node);
    log.scrollTop = log.scrollHeight;
    return { node: node, body: body };
  }

  function render(msg, text, citations) {
    var opts = citations ? { citations: citations, onCite: function (i) { openPassage(citations[i]); } } : null;
    msg.body.replaceChildren(R.renderMarkdown(text, opts));
    log.scrollTop = log.scrollHeight;
  }

  function finish(msg, data) {
    render(msg, data.answer, data.citations);
    msg.node.setAttribute("data-done", "1");
    if (data.abstained) msg.node.classList.add("abstained");
    if (data.citations && data.citations.length) msg.node.appendChild(pageList(el("ol", "cites"), data.citations));
    if (data.suggestions && data.suggestions.length) {  // a hand-off still points at the pages it searched
      var more = el("div", "suggestions", "Pages that may help:");
      more.appendChild(pageList(el("ul"), data.suggestions));
      msg.node.appendChild(more);
    }
    if (mode === "page" && data.message_id) msg.node.appendChild(feedbackBar(data.message_id));
  }

  function pageList(list, pages) {  // each page a button that opens its passage
    pages.forEach(function (c) {
      var li = el("li");
      var b = el("button", "cite", c.title || c.source);
      b.type = "button";
      b.addEventListener("click", function () { openPassage(c); });
      li.appendChild(b);
      list.appendChild(li);
    });
    return list;
  }

  function feedbackBar(messageId) {
    var bar = el("div", "feedback");
    var comment = el("input");
    comment.type = "text";
    comment.placeholder = "comment (optional)";
    comment.maxLength = 2000;
    var status = el("span", "status");
    ["up", "down"].forEach(function (rating) {
      var b = el("button", "thumb " + rating, rating === "up" ? "\u25B2 helpful" : "\u25BC not helpful");
      b.type = "button";
      b.title = rating === "up" ? "thumbs up" : "thumbs down";
      b.addEventListener("click", function () {
        R.api("POST", "/api/bots/" + enc(bot) + "/messages/" + messageId + "/feedback",
              { rating: rating, comment: comment.value }).then(function () {
          status.textContent = "thanks!";
          bar.setAttribute("data-rating", rating);
        }).catch(function (err) { status.textContent = err.message; });
      });
      bar.appendChild(b);
    });
    bar.appendChild(comment);
    bar.appendChild(status);
    return bar;
  }

  function openPassage(c) {
    var panel = document.getElementById("passage");
    function show(title, source, text) {
      document.getElementById("passage-title").textContent = title;
      var src = document.getElementById("passage-source");
      src.replaceChildren(/^https?:\/\//.test(source) ? R.link(source, source) : document.createTextNode(source));
      document.getElementById("passage-text").textContent = text;
      panel.hidden = false;
    }
    if (mode !== "page") return show(c.title, c.source, c.quote);  // a widget token reaches chat only
    R.api("GET", "/api/bots/" + enc(bot) + "/passages/" + enc(c.chunk_id)).then(function (p) {
      show([p.title].concat(p.heading.filter(function (h) { return h !== p.title; })).join(" › "), p.source, p.text);
    }).catch(function () { show(c.title, c.source, c.quote); });
  }
  var close = document.getElementById("passage-close");
  if (close) close.addEventListener("click", function () { document.getElementById("passage").hidden = true; });

  function ask(question) {
    send.disabled = true;
    addMessage("user", question);
    var msg = addMessage("bot", "");
    msg.node.classList.add("streaming");
    var text = "", pieces = 0, ended = false;
    R.stream("/api/bots/" + enc(bot) + "/chat", { message: question, conversation_id: conversation, stream: true },
      function (event, data) {
        if (event === "token") {
          text += data.text;
          pieces += 1;
          msg.node.setAttribute("data-pieces", String(pieces));
          render(msg, text, null);
        } else if (event === "done") {
          ended = true;
          conversation = data.conversation_id;
          finish(msg, data);
        } else if (event === "error") {
          ended = true;
          msg.node.classList.add("error");
          msg.body.textContent = data.error || "error";
        }
      }).catch(function (err) {
        msg.node.classList.add("error");
        msg.body.textContent = err.message || "the server did not answer";
        ended = true;
      }).then(function () {
        if (!ended) { msg.node.classList.add("error"); msg.body.textContent = text + " (interrupted)"; }
        msg.node.classList.remove("streaming");
        send.disabled = false;
        input.focus();
      });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var q = input.value.trim();
    if (!q || send.disabled || !bot) return;
    input.value = "";
    ask(q);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  var reset = document.getElementById("new-chat");
  if (reset) reset.addEventListener("click", function () { conversation = null; log.replaceChildren(); });
  start();
})();
