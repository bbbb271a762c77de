/* ragtune widget: <script src="https://HOST/widget.js" data-bot="NAME" data-token="rtw_…"></script> adds a chat
   bubble to any page. The chat itself runs in a frame served by the ragtune server (its own origin and
   Content-Security-Policy), so the host page's scripts cannot read it and it cannot touch the host page.
   Optional: data-title (the frame's title), data-position="left". */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__ragtuneWidget) return;
  window.__ragtuneWidget = true;
  var bot = script.getAttribute("data-bot") || "default";
  var token = script.getAttribute("data-token") || "";
  var title = script.getAttribute("data-title") || "Chat with us";
  var side = script.getAttribute("data-position") === "left" ? "left" : "right";
  var origin = new URL(script.src, window.location.href).origin;
  var frame = null;

  function css(node, styles) { for (var k in styles) node.style[k] = styles[k]; }

  function mount() {
    var button = document.createElement("button");
    button.type = "button";
    button.id = "ragtune-widget-button";
    button.setAttribute("aria-label", title);
    button.title = title;
    var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "28");
    svg.setAttribute("height", "28");
    var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("fill", "currentColor");
    path.setAttribute("d", "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z");
    svg.appendChild(path);
    button.appendChild(svg);
    css(button, { position: "fixed", bottom: "20px", width: "56px", height: "56px", borderRadius: "28px",
                  border: "none", background: "#1f5eff", color: "#fff", cursor: "pointer", padding: "0",
                  boxShadow: "0 4px 14px rgba(0,0,0,.25)", zIndex: "2147483646" });
    button.style[side] = "20px";
    button.addEventListener("click", function () {
      if (!frame) {
        frame = document.createElement("iframe");
        frame.id = "ragtune-widget-frame";
        frame.title = title;
        frame.setAttribute("referrerpolicy", "no-referrer");
        // the token travels in the fragment: never sent to a server, never in logs
        frame.src = origin + "/widget/frame?bot=" + encodeURIComponent(bot) + "#token=" + encodeURIComponent(token);
        css(frame, { position: "fixed", bottom: "88px", width: "370px", maxWidth: "calc(100vw - 40px)",
                     height: "540px", maxHeight: "calc(100vh - 110px)", border: "1px solid #d0d4dc",
                     borderRadius: "12px", background: "#fff", boxShadow: "0 8px 30px rgba(0,0,0,.25)",
                     zIndex: "2147483647" });
        frame.style[side] = "20px";
        document.body.appendChild(frame);
      } else {
        frame.style.display = frame.style.display === "none" ? "block" : "none";
      }
    });
    document.body.appendChild(button);
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
