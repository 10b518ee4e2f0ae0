// Copy buttons: <button class="copy-answer" data-copy="<CSS selector>"> copies that element's text.
(() => {
  "use strict";

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    // Plain HTTP on a non-local host has no clipboard API: fall back to a selection.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.copy-answer");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    try {
      await copyText(source.innerText.trim());
      button.textContent = "Copied";
    } catch (error) {
      button.textContent = "Copy failed: select the text instead";
    }
    setTimeout(() => { button.textContent = label; }, 2000);
  });
})();
