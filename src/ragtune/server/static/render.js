/* ragtune: answers rendered as sanitised Markdown, built node by node — never innerHTML. Raw HTML shows as
   text, images are never loaded (they could carry data to another host), links are http(s)/mailto only and
   open with rel="noopener noreferrer". Shared by the chat page, the widget frame and the admin page. */
(function () {
  "use strict";

  function safeUrl(url) {
    try {
      var u = new URL(url, window.location.href);
      if (u.protocol === "http:" || u.protocol === "https:" || u.protocol === "mailto:") return u.href;
    } catch (e) { /* not a URL */ }
    return null;
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function link(text, url) {
    var href = safeUrl(url);
    if (!href) return document.createTextNode(text);
    var a = el("a", null, text);
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    return a;
  }

  // code | image | link | bold | bold | italic | italic | citation [n] | bare URL
  var INLINE = /(`+)([^`]+?)\1|!\[([^\]]*)\]\(([^)\s]*)(?:\s+"[^"]*")?\)|\[([^\]]+)\]\(([^)\s]*)(?:\s+"[^"]*")?\)|\*\*(.+?)\*\*|(?<!\w)__(\S(?:.*?\S)?)__(?!\w)|\*([^*\s](?:[^*]*[^*\s])?)\*|\b_([^_\s](?:[^_]*[^_\s])?)_\b|\[(\d{1,2})\]|(https?:\/\/[^\s<>()"']+[^\s<>()"'.,;:!?])/g;

  function inline(text, parent, opts) {
    var last = 0, m;
    INLINE.lastIndex = 0;
    var re = new RegExp(INLINE.source, "g");
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[2] !== undefined) parent.appendChild(el("code", null, m[2]));
      else if (m[4] !== undefined) {
        // an image is shown as its description, never fetched
        parent.appendChild(el("span", "img-blocked", "[image" + (m[3] ? ": " + m[3] : "") + "]"));
      } else if (m[6] !== undefined) parent.appendChild(link(m[5], m[6]));
      else if (m[7] !== undefined || m[8] !== undefined) inline(m[7] || m[8], parent.appendChild(el("strong")), opts);
      else if (m[9] !== undefined || m[10] !== undefined) inline(m[9] || m[10], parent.appendChild(el("em")), opts);
      else if (m[11] !== undefined) {
        var n = parseInt(m[11], 10);
        if (opts && opts.onCite && opts.citations && n >= 1 && n <= opts.citations.length) {
          var b = el("button", "cite-mark", "[" + n + "]");
          b.type = "button";
          b.title = opts.citations[n - 1].title || opts.citations[n - 1].source || "";
          b.addEventListener("click", (function (i) { return function () { opts.onCite(i); }; })(n - 1));
          parent.appendChild(b);
        } else parent.appendChild(document.createTextNode(m[0]));
      } else if (m[12] !== undefined) parent.appendChild(link(m[12], m[12]));
      last = re.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function renderMarkdown(text, opts) {
    var root = document.createDocumentFragment();
    var lines = String(text || "").replace(/\r\n?/g, "\n").split("\n");
    var i = 0, para = [], list = null;

    function flushPara() {
      if (!para.length) return;
      var p = el("p");
      para.forEach(function (line, j) {
        if (j) p.appendChild(el("br"));
        inline(line, p, opts);
      });
      root.appendChild(p);
      para = [];
    }
    function flushList() { list = null; }

    while (i < lines.length) {
      var line = lines[i];
      var fence = /^\s*```/.test(line);
      if (fence) {
        flushPara(); flushList();
        var code = [];
        i++;
        while (i < lines.length && !/^\s*```/.test(lines[i])) code.push(lines[i++]);
        i++;
        var pre = el("pre");
        pre.appendChild(el("code", null, code.join("\n")));
        root.appendChild(pre);
        continue;
      }
      var h = /^\s*(#{1,6})\s+(.*)$/.exec(line);
      var bullet = /^\s*([-*+]|\d{1,3}[.)])\s+(.*)$/.exec(line);
      if (!line.trim()) { flushPara(); flushList(); }
      else if (h) {
        flushPara(); flushList();
        var head = el("p", "h");
        inline(h[2], head.appendChild(el("strong")), opts);
        root.appendChild(head);
      } else if (bullet) {
        flushPara();
        var ordered = /\d/.test(bullet[1]);
        if (!list || list.ordered !== ordered) {
          list = { node: el(ordered ? "ol" : "ul"), ordered: ordered };
          root.appendChild(list.node);
        }
        var li = el("li");
        inline(bullet[2], li, opts);
        list.node.appendChild(li);
      } else {
        flushList();
        para.push(line.replace(/^\s*>\s?/, ""));
      }
      i++;
    }
    flushPara();
    return root;
  }

  window.Ragtune = window.Ragtune || {};
  window.Ragtune.renderMarkdown = renderMarkdown;
  window.Ragtune.safeUrl = safeUrl;
  window.Ragtune.el = el;
  window.Ragtune.link = link;
})();
