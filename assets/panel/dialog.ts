/**
 * Modal dialogs on the native <dialog>: showModal() keeps focus inside and makes the rest of the
 * page inert, Escape cancels; on close the focus returns to the control that opened it.
 */
import { isAbort } from "./api.ts";
import { h, uniqueId, type Child } from "./dom.ts";
import { clearErrors, showError } from "./forms.ts";

const open = new Set<HTMLDialogElement>();

export interface FormDialogOptions {
  title: string;
  /** Text above the fields. */
  intro?: Child;
  fields?: Child[];
  submitLabel: string;
  /** The submit button's label while the request runs ("Creating…"). */
  busyLabel?: string;
  /** A destructive action: red button, and the focus starts on Cancel. */
  danger?: boolean;
  /** The other button's label, "Cancel" unless given. */
  cancelLabel?: string;
  /** What that button does besides closing the dialog (Escape only closes it). */
  onCancel?(): void;
  /** Runs on submit; the dialog closes when it resolves and shows what it throws. */
  submit(form: HTMLFormElement): Promise<void>;
}

export function openFormDialog(options: FormDialogOptions): HTMLDialogElement {
  const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  const titleId = uniqueId("dialog-title");
  const cancel = h("button", { type: "button", class: "secondary", autofocus: options.danger }, options.cancelLabel ?? "Cancel");
  const submit = h("button", { type: "submit", class: options.danger ? "danger" : "primary" }, options.submitLabel);
  const form = h(
    "form",
    { class: "dialog-form" },
    h("h2", { id: titleId }, options.title),
    options.intro ? h("div", { class: "dialog-intro" }, options.intro) : null,
    h("p", { class: "form-error", role: "alert", hidden: true }),
    ...(options.fields ?? []),
    h("div", { class: "dialog-actions" }, cancel, submit),
  );
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": titleId }, form);
  let busy = false;
  const setBusy = (on: boolean) => {
    busy = on;
    for (const button of [submit, cancel]) button.setAttribute("aria-disabled", String(on));
  };

  const close = () => {
    if (dialog.open) dialog.close();
  };
  cancel.addEventListener("click", () => {
    if (busy) return;
    close();
    options.onCancel?.();
  });
  dialog.addEventListener("cancel", (event) => {
    if (busy) event.preventDefault();
  });
  dialog.addEventListener("close", () => {
    open.delete(dialog);
    dialog.remove();
    // The browser puts the focus back on the opener itself; step in only where that failed.
    const active = document.activeElement;
    if (active === null || active === document.body || dialog.contains(active)) {
      (opener?.isConnected ? opener : document.getElementById("page"))?.focus();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    clearErrors(form);
    // aria-disabled rather than disabled: a disabled button would drop the keyboard focus.
    setBusy(true);
    submit.textContent = options.busyLabel ?? options.submitLabel;
    try {
      await options.submit(form);
      close();
    } catch (error) {
      if (!isAbort(error)) showError(form, error);
    } finally {
      setBusy(false);
      submit.textContent = options.submitLabel;
    }
  });

  document.body.append(dialog);
  open.add(dialog);
  dialog.showModal();
  return dialog;
}

/** "Delete alice?" with Cancel focused; `action` runs on confirmation, its error stays in view. */
export function confirmDialog(options: {
  title: string;
  message: Child;
  confirmLabel: string;
  busyLabel?: string;
  action(): Promise<void>;
}): HTMLDialogElement {
  return openFormDialog({
    title: options.title,
    intro: options.message,
    submitLabel: options.confirmLabel,
    ...(options.busyLabel ? { busyLabel: options.busyLabel } : {}),
    danger: true,
    submit: () => options.action(),
  });
}

/** Closes every open dialog (the session ended under them). */
export function closeAllDialogs(): void {
  for (const dialog of [...open]) dialog.close();
}
