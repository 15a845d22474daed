// The confirmation dialog: a modal <dialog> (the rest of the page is inert while it is
// open, so focus stays inside), Escape cancels, and focus returns to the control that
// opened it.

export function confirmAction(title, text, okLabel) {
  const dialog = document.getElementById("confirm");
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  ok.textContent = okLabel;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const finish = (answer) => {
      ok.removeEventListener("click", onOk);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onEscape);
      dialog.removeEventListener("keydown", onKey);
      dialog.close();
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(answer);
    };
    const onOk = () => finish(true);
    const onCancel = () => finish(false);
    const onEscape = (event) => {
      event.preventDefault();
      finish(false);
    };
    // Tab and Shift+Tab cycle between the two buttons.
    const onKey = (event) => {
      if (event.key !== "Tab") return;
      event.preventDefault();
      (document.activeElement === ok ? cancel : ok).focus();
    };
    ok.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onEscape);
    dialog.addEventListener("keydown", onKey);
    dialog.showModal();
    cancel.focus();
  });
}
