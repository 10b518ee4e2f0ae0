// The chat page: sends questions over the agent's websocket, shows the answer as it streams, then
// swaps in the server's rendering of the stored answer (Markdown, sources, cache badge, feedback).
// Text from people and models is only ever inserted as text; HTML comes from our own server.
(() => {
  "use strict";
  const form = document.getElementById("composer");
  if (!form) return;
  const box = document.getElementById("question");
  const sendButton = document.getElementById("send");
  const errorLine = document.getElementById("composer-error");
  const connection = document.getElementById("connection");
  const list = document.getElementById("messages");
  const agentName = form.dataset.agentName;
  const chatUrl = form.dataset.chatUrl;
  const csrfToken = () => (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";

  const CLOSED_FOR_GOOD = {
    4401: "Your session has ended. Log in again to keep chatting.",
    4403: "You are no longer allowed to use this agent.",
    4404: "This agent is no longer available.",
  };
  const MAX_BACKOFF_SECONDS = 30;

  let conversationId = form.dataset.conversationId ? Number(form.dataset.conversationId) : null;
  let socket = null;
  let failures = 0;
  let turn = null; // {text, question: <li>, answer: <li>|null} while a question is being answered
  let lostTurn = false; // the socket dropped while an answer was being written

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${form.dataset.wsPath}`;
  }

  function setConnection(text, down) {
    connection.textContent = text;
    connection.classList.toggle("connection--down", Boolean(down));
  }

  function updateSendButton() {
    sendButton.disabled = turn !== null || !socket || socket.readyState !== WebSocket.OPEN;
  }

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  function connect() {
    socket = new WebSocket(socketUrl());
    socket.addEventListener("open", () => {
      const recovered = failures > 0;
      failures = 0;
      setConnection(recovered ? "Reconnected." : "Connected.", false);
      updateSendButton();
      if (recovered && lostTurn) refreshHistory();
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (_) { return; }
      if (frame.type === "delta") onDelta(frame);
      else if (frame.type === "done") onDone(frame);
      else if (frame.type === "error") onError(frame);
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      updateSendButton();
      if (turn) {
        // The server finishes and stores the answer whoever listens; it shows after reconnecting.
        lostTurn = true;
        if (turn.answer) turn.answer.querySelector(".message__body").setAttribute("aria-busy", "false");
        turn = null;
      }
      const final = CLOSED_FOR_GOOD[event.code];
      if (final) {
        setConnection(final, true);
        return;
      }
      failures += 1;
      const delay = Math.min(MAX_BACKOFF_SECONDS, 2 ** (failures - 1)) * (0.8 + Math.random() * 0.4);
      setConnection(`Connection lost. Reconnecting in ${Math.round(delay)} s…`, true);
      setTimeout(connect, delay * 1000);
    });
  }

  function messageItem(role, who) {
    const item = document.createElement("li");
    item.className = `message message--${role}`;
    const label = document.createElement("div");
    label.className = "message__who";
    label.textContent = who;
    const body = document.createElement("div");
    body.className = role === "user" ? "message__body message__body--plain" : "message__body message__body--streaming";
    item.append(label, body);
    list.append(item);
    return item;
  }

  function fromHtml(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  async function fetchHtml(url) {
    const response = await fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.text();
  }

  async function showStoredAnswer(messageId, placeholder) {
    try {
      const item = fromHtml(await fetchHtml(`/answers/${messageId}/`));
      if (placeholder) placeholder.replaceWith(item); else list.append(item);
    } catch (_) {
      if (placeholder) placeholder.querySelector(".message__body").setAttribute("aria-busy", "false");
    }
  }

  function adoptConversation(id, title) {
    if (conversationId === id) return;
    conversationId = id;
    form.dataset.conversationId = String(id);
    const url = `${chatUrl}c/${id}/`;
    history.replaceState(null, "", url);
    // The new conversation joins the side list, first, as it will be after a reload.
    let sidebar = document.getElementById("conversation-list");
    if (sidebar && sidebar.tagName !== "UL") {
      const fresh = document.createElement("ul");
      fresh.className = "conversation-list";
      fresh.id = "conversation-list";
      sidebar.replaceWith(fresh);
      sidebar = fresh;
    }
    if (sidebar && title) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = url;
      link.textContent = title;
      link.setAttribute("aria-current", "page");
      sidebar.querySelectorAll("a[aria-current]").forEach((a) => a.removeAttribute("aria-current"));
      item.append(link);
      sidebar.prepend(item);
      document.getElementById("chat-subtitle").textContent = title;
      document.title = `${title} · ${document.title.replace(/^New conversation · /, "")}`;
    }
  }

  async function refreshHistory() {
    // Reload this conversation's messages from the server: an answer finished while we were away.
    lostTurn = false;
    if (conversationId === null) {
      setConnection("Reconnected. Your last answer is in the conversation list once it is ready.", false);
      return;
    }
    try {
      const page = new DOMParser().parseFromString(await fetchHtml(`${chatUrl}c/${conversationId}/`), "text/html");
      const fresh = page.getElementById("messages");
      if (fresh) list.replaceChildren(...fresh.children);
    } catch (_) {
      setConnection("Reconnected. Reload the page to see the latest answer.", false);
    }
  }

  function onDelta(frame) {
    if (!turn) return;
    if (!turn.answer) {
      turn.answer = messageItem("assistant", agentName);
      turn.answer.querySelector(".message__body").setAttribute("aria-busy", "true");
    }
    turn.answer.querySelector(".message__body").textContent += frame.text;
    turn.answer.scrollIntoView({ block: "end" });
  }

  function onDone(frame) {
    const placeholder = turn && turn.answer;
    const title = turn && turn.text.split("\n")[0].slice(0, 80);
    turn = null;
    adoptConversation(frame.conversation_id, title);
    showStoredAnswer(frame.message_id, placeholder);
    updateSendButton();
    setConnection("Answer complete.", false);
    box.focus();
  }

  function onError(frame) {
    const current = turn;
    turn = null;
    let text = frame.message || "Something went wrong.";
    if (frame.code === "rate_limited") {
      const wait = frame.retry_after ? `in ${frame.retry_after} s` : "in a minute";
      text = `You have asked a lot of questions in a short time. Try again ${wait}; your text is still in the box.`;
    }
    showError(text);
    if (current) {
      if (current.answer) current.answer.remove();
      if (frame.conversation_id && frame.message_id) {
        // The question was stored, with an error answer: show both as the history will.
        adoptConversation(frame.conversation_id, current.text.split("\n")[0].slice(0, 80));
        showStoredAnswer(frame.message_id, null);
      } else {
        current.question.remove();
      }
      if (!box.value) box.value = current.text;
    }
    updateSendButton();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = box.value.trim();
    if (!text || turn || !socket || socket.readyState !== WebSocket.OPEN) return;
    showError("");
    const question = messageItem("user", "You");
    question.querySelector(".message__body").textContent = text;
    turn = { text, question, answer: null };
    socket.send(JSON.stringify({ type: "message", message: text, conversation_id: conversationId }));
    box.value = "";
    updateSendButton();
    setConnection("Writing the answer…", false);
    question.scrollIntoView({ block: "end" });
  });

  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  // Feedback without a reload: the server answers with the answer's new rendering.
  list.addEventListener("submit", async (event) => {
    const feedback = event.target.closest("form.feedback");
    if (!feedback) return;
    event.preventDefault();
    const data = new FormData(feedback);
    if (event.submitter && event.submitter.name) data.set(event.submitter.name, event.submitter.value);
    const item = feedback.closest("li.message");
    try {
      const response = await fetch(feedback.action, {
        method: "POST",
        body: data,
        headers: { "X-Requested-With": "fetch", "X-CSRFToken": csrfToken() },
        credentials: "same-origin",
      });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        showError((body && body.error && body.error.message) || "Your feedback could not be saved.");
        return;
      }
      item.replaceWith(fromHtml(await response.text()));
    } catch (_) {
      showError("Your feedback could not be saved: the server did not answer.");
    }
  });

  updateSendButton();
  connect();
})();
