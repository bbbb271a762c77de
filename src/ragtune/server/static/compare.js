/* ragtune admin page, "Strategy" section: the bot's latest comparison run (base / rag / finetune / hybrid
   measured on its own documents) and the advisor's recommendation. Follows the page's bot selector; DOM built
   with textContent only. Runs are made with `ragtune compare`; this only shows them. */
(function () {
  "use strict";
  var R = window.Ragtune, el = R.el;
  var select = document.getElementById("bot-select");
  var box = document.getElementById("comparison");
  if (!select || !box) return;
  var shown = null;

  function pct(x) { return x === null || x === undefined ? "n/a" : Math.round(x * 100) + "%"; }
  function num(x) { return x === null || x === undefined ? "n/a" : String(Math.round(x)); }
  function when(ts) { return ts ? new Date(ts * 1000).toLocaleString() : ""; }

  function table(run) {
    var t = el("table");
    var head = el("tr");
    ["strategy", "accuracy", "abstention", "grounded", "recall@k", "p50 ms", "after change"].forEach(function (h) {
      head.appendChild(el("th", null, h));
    });
    t.appendChild(head);
    var fresh = run.freshness || {};
    Object.keys(run.strategies).forEach(function (name) {
      var m = run.strategies[name], tr = el("tr");
      var after = fresh[name] && typeof fresh[name] === "object" ? pct(fresh[name].accuracy_after_change) : "—";
      [name, pct(m.accuracy), pct(m.abstention_accuracy), pct(m.grounded), pct(m["recall@k"]),
       num(m.latency_ms_p50), after].forEach(function (v) { tr.appendChild(el("td", null, v)); });
      t.appendChild(tr);
    });
    return t;
  }

  function render(data) {
    box.replaceChildren();
    var rec = data.recommendation || {};
    if (rec.error) {
      box.appendChild(el("p", "job failed", rec.error));
    } else {
      var p = el("p");
      p.appendChild(el("strong", null, "Recommendation: " + rec.recommendation));
      if (rec.rule_based && rec.rule_based.recommendation !== rec.recommendation) {
        p.appendChild(el("span", null, " (the rules alone say " + rec.rule_based.recommendation +
          "; the measurements overturned them)"));
      }
      box.appendChild(p);
      var why = el("ul");
      (rec.reasons || []).slice(0, 5).forEach(function (r) { why.appendChild(el("li", null, r)); });
      box.appendChild(why);
      if (rec.assumed && rec.assumed.length) {
        var assumed = rec.assumed.map(function (a) { return a.replace(/ \(not given; assumed\)$/, ""); });
        box.appendChild(el("p", "cite", "Assumed, not in the bot's advisor_profile setting: " + assumed.join(", ") +
          ". `ragtune advise` takes your real profile."));
      }
    }
    var run = data.run;
    if (!run) {
      box.appendChild(el("p", null, "No comparison yet. Measure the strategies on this bot's documents with " +
        "`ragtune compare --bot " + shown + "`."));
      return;
    }
    box.appendChild(el("p", null, "Latest comparison: run " + run.run_id + ", " + when(run.finished_at) + ", " +
      ((run.questions || {}).count || "?") + " questions."));
    box.appendChild(table(run));
    if (run.freshness) {
      var retrain = run.freshness.retrain_seconds;
      box.appendChild(el("p", null, "After the documents changed: synced in " + run.freshness.sync_seconds + " s" +
        (retrain === null || retrain === undefined ? "." : "; retraining the adapter takes " + num(retrain) + " s.")));
    }
    var a = el("a", null, "full report");
    a.href = "/api/bots/" + encodeURIComponent(shown) + "/runs/" + encodeURIComponent(run.run_id) + "/report";
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    box.appendChild(a);
  }

  function load() {
    var bot = select.value;
    if (!bot || bot === shown) return;
    shown = bot;
    box.replaceChildren(el("p", null, "loading…"));
    R.api("GET", "/api/bots/" + encodeURIComponent(bot) + "/comparison").then(render).catch(function (err) {
      box.replaceChildren(el("p", "job failed", err.message || String(err)));
    });
  }

  select.addEventListener("change", load);
  new MutationObserver(function () { setTimeout(load, 0); }).observe(select, { childList: true });
  load();
})();
