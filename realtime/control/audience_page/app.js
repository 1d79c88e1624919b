// The audience page. Everything the server or a visitor wrote is shown with textContent,
// never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let typing = null;

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind;
}

function showSuggestions(names) {
  const list = $("suggestions");
  list.replaceChildren();
  for (const name of names) {
    const item = document.createElement("li");
    const pick = document.createElement("button");
    pick.type = "button";
    pick.textContent = name;
    pick.addEventListener("click", () => {
      $("name").value = name;
      list.replaceChildren();
      $("send").focus();
    });
    item.appendChild(pick);
    list.appendChild(item);
  }
}

async function suggest() {
  const q = $("name").value.trim();
  if (!q) { showSuggestions([]); return; }
  try {
    const r = await fetch("/api/classes?q=" + encodeURIComponent(q));
    if (r.ok && $("name").value.trim() === q) showSuggestions((await r.json()).names);
  } catch (e) { /* offline for a moment: no suggestions */ }
}

function showState(s) {
  $("pin-row").hidden = !s.pin;
  if (!s.enabled) $("now").textContent = "requests are paused right now";
  else if (s.now) $("now").textContent = s.now.name + " (asked " + Math.round(s.now.asked_s) + " s ago)";
  else $("now").textContent = "nothing asked: the artist's own dream";
  const q = $("queue");
  q.replaceChildren();
  for (const name of s.queue) {
    const item = document.createElement("li");
    item.textContent = name;
    q.appendChild(item);
  }
}

async function poll() {
  try {
    const r = await fetch("/api/state");
    if (r.ok) showState(await r.json());
  } catch (e) { /* try again at the next poll */ }
}

async function ask(event) {
  event.preventDefault();
  const body = { name: $("name").value, pin: $("pin").value };
  $("send").disabled = true;
  try {
    const r = await fetch("/api/request", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const reply = await r.json();
    if (reply.ok) {
      say((reply.merged ? "Others asked for " : "Queued: ") + reply.name +
          (reply.merged ? " too: it is coming." : ". Watch the screen!"), "ok");
      $("name").value = "";
      showSuggestions([]);
      showState(reply.state);
    } else {
      say(reply.error, "error");
      showSuggestions(reply.suggestions || []);
    }
  } catch (e) {
    say("could not reach the installation; try again", "error");
  } finally {
    $("send").disabled = false;
  }
}

$("name").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(suggest, 150);
});
$("ask").addEventListener("submit", ask);
poll();
setInterval(poll, 2000);
