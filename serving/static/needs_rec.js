/* needs_rec pages: stage switch and "show more" without a reload, feedback buttons.
   Plain JavaScript, no dependencies, no inline handlers (the pages' Content-Security-Policy allows
   only this file). Without JavaScript the page still works through its GET forms and links. */
(function () {
  "use strict";

  var cardRequest = 0;

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  /* A URL on this origin: never relative to a page URL that may carry user:password@ (fetch refuses those). */
  function here(path) {
    return new URL(path, window.location.origin).toString();
  }

  /* A random UUID v4; crypto.randomUUID exists only in secure contexts, getRandomValues everywhere. */
  function newId() {
    var b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function setStatus(el, text, kind) {
    el.textContent = text;
    el.className = "status" + (kind ? " " + kind : "");
  }

  /* A card that could not be replaced: the stage selector goes back to the stage the card still shows
     (its points are that stage's, not the one chosen), and one notice says why — a second failure
     rewrites it instead of piling up another. */
  function cardProblem(card, text) {
    var shown = card.querySelector(".points");
    var select = document.querySelector('form.stage select[name="stage"]');
    if (shown && select) { select.value = shown.getAttribute("data-stage"); }
    var box = card.querySelector(".card-problem");
    if (!box) {
      box = document.createElement("p");
      box.className = "notice card-problem";
      box.setAttribute("role", "alert");
      card.insertBefore(box, card.firstChild);
    }
    box.textContent = text;
  }

  /* The notice a refused card's fragment carries (the CRM locked, an unknown contact, an id too long),
     as plain text, or "" when it has none (a proxy's error page). The fragment is parsed inert: a
     DOMParser document runs no script and loads nothing, and only its text is shown. */
  function serverNotice(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var notice = doc.querySelector('.notice[role="alert"]') || doc.querySelector(".notice");
    return notice ? notice.textContent.replace(/\s+/g, " ").trim() : "";
  }

  function loadCard(contact, stage, more, focusHeading) {
    var card = document.getElementById("card");
    if (!card) { return; }
    var ticket = ++cardRequest;
    var query = "?contact=" + encodeURIComponent(contact) + "&stage=" + encodeURIComponent(stage) + (more ? "&more=1" : "");
    card.setAttribute("aria-busy", "true");
    fetch(here("/contacts/card" + query), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        return response.text().then(function (text) { return { ok: response.ok, status: response.status, text: text }; });
      })
      .then(function (r) {
        if (ticket !== cardRequest) { return; }  /* a newer choice is on its way */
        card.removeAttribute("aria-busy");
        if (!r.ok) {  /* the server's own words say what is wrong; a generic line only without them */
          cardProblem(card, serverNotice(r.text) ||
            "Не удалось загрузить подсказки (" + r.status + "). Обновите страницу; если не поможет — сообщите администратору.");
          return;
        }
        card.innerHTML = r.text;
        window.history.replaceState(null, "", "/" + query);
        if (focusHeading) {  /* the link that was pressed is gone: keep keyboard users at the new list */
          var heading = card.querySelector("#points-title");
          if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
        }
      })
      .catch(function () {
        if (ticket !== cardRequest) { return; }
        card.removeAttribute("aria-busy");
        cardProblem(card, "Нет связи с сервисом. Проверьте сеть и выберите этап ещё раз.");
      });
  }

  /* What the manager reads: for the statuses explained here in Russian (409, 401/403, 404, 5xx) the
     server's English error text is not appended; only an unexpected status shows it, for support. */
  function explain(status, body) {
    var said = body && body.error ? " (" + body.error + ")" : "";
    if (status === 409) {
      return "Уже отмечено сегодня: по этой подсказке ответ уже сохранён (в другой вкладке или до обновления страницы); изменить его нельзя. Обновите страницу, чтобы его увидеть.";
    }
    if (status === 401 || status === 403) {
      return "Не сохранено: сессия устарела. Обновите страницу и нажмите ещё раз.";
    }
    if (status === 404) {
      return "Не сохранено: контакт не найден в CRM. Обновите страницу.";
    }
    if (status >= 500 || status === 0) {
      return "Не сохранено: сервис или база данных сейчас недоступны. Нажмите ещё раз через минуту — повтор не создаст дубль.";
    }
    return "Не сохранено" + said + ". Обновите страницу и попробуйте снова.";
  }

  function sendFeedback(button) {
    var point = button.closest("[data-characteristic]");
    var points = button.closest(".points");
    if (!point || !points) { return; }
    var status = point.querySelector(".status");
    var outcome = button.getAttribute("data-outcome");
    var buttons = point.querySelectorAll("button[data-outcome]");
    /* One event per talking point and day: the server renders the point's id from (contact, stage,
       characteristic, day), so a retry, a reload or another tab sends the same id; the server stores
       it at most once and refuses a different answer (409). A point without one gets a random id. */
    if (!point.dataset.feedbackId) { point.dataset.feedbackId = newId(); }
    var body = {
      feedback_id: point.dataset.feedbackId,
      contact_id: points.getAttribute("data-contact"),
      stage: points.getAttribute("data-stage"),
      characteristic: point.getAttribute("data-characteristic"),
      outcome: outcome
    };
    var requestId = points.getAttribute("data-request-id");
    if (requestId) { body.request_id = requestId; }
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    setStatus(status, "Сохраняю…", "pending");
    fetch(here("/v1/feedback"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(body)
    })
      .then(function (response) {
        return response.json().catch(function () { return null; }).then(function (data) {
          return { status: response.status, data: data };
        });
      })
      .then(function (r) {
        if (r.status === 200 || r.status === 201) {
          button.setAttribute("aria-pressed", "true");
          point.classList.add(outcome === "positive" ? "resonated" : "not-resonated");
          setStatus(status, outcome === "positive" ? "Сохранено: отозвалось." : "Сохранено: не отозвалось.", "saved");
          return;
        }
        if (r.status !== 409) {
          Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; });
        }
        setStatus(status, explain(r.status, r.data), "error");
      })
      .catch(function () {
        Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; });
        setStatus(status, explain(0, null), "error");
      });
  }

  document.documentElement.classList.add("js");

  document.addEventListener("change", function (event) {
    var select = event.target;
    if (select.matches && select.matches('form.stage select[name="stage"]')) {
      var contact = select.form.querySelector('input[name="contact"]').value;
      loadCard(contact, select.value, false);
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("a[data-more], button[data-outcome]") : null;
    if (!target) { return; }
    if (target.matches("button[data-outcome]")) {
      sendFeedback(target);
      return;
    }
    var points = target.closest(".points");
    if (!points) { return; }
    event.preventDefault();
    loadCard(points.getAttribute("data-contact"), points.getAttribute("data-stage"),
             target.getAttribute("data-more") === "1", true);
  });
})();
